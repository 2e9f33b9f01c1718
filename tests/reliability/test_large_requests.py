"""Large legal requests against `synthserve serve` on the shipped models: memory and fairness.

Promises (docs/reliability.md): server RSS stays within idle + RSS_BUDGET_MB under any legal request and a burst of
them (the memory budget refuses the excess with RESOURCE_EXHAUSTED naming max_inflight_bytes); heavy graphs run in
runs of about max_run_s, so a large request neither pins the runtime's memory nor holds other calls: a one-row
Sample of the same model and a health check stay fast while it runs; memory returns to the OS afterwards.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from serving.proto import synthesizer_pb2 as pb
from serving.proto import synthesizer_pb2_grpc as pb_grpc
from tests.reliability.served import ServeProcess

STORE = Path(__file__).parents[2] / "model_store"
RSS_BUDGET_MB = 256
MB = 2**20
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 64 * MB), ("grpc.max_send_message_length", 64 * MB)]


@pytest.fixture(scope="module")
def served() -> Iterator[ServeProcess]:
    with ServeProcess(STORE, "--reload-interval-s", "0") as server:
        yield server


class Watch:
    """Samples the server's RSS and the latency of a one-row Sample and a health check, every 10 ms."""

    def __init__(self, server: ServeProcess, model: str) -> None:
        self.rss = [server.rss_bytes()]
        self.small: list[float] = []
        self.health: list[float] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._loop, args=(lambda: self.rss.append(server.rss_bytes()),)),
            threading.Thread(target=self._probe, args=(server.target, model)),
        ]
        for thread in self._threads:
            thread.start()

    def _loop(self, step: Callable[[], None]) -> None:
        while not self._stop.is_set():
            step()
            time.sleep(0.01)

    def _probe(self, target: str, model: str) -> None:
        with grpc.insecure_channel(target) as channel:
            stub, health = pb_grpc.SynthesizerStub(channel), health_pb2_grpc.HealthStub(channel)
            while not self._stop.is_set():
                started = time.perf_counter()
                stub.Sample(pb.SampleRequest(model=model, num_rows=1, seed=1), timeout=30)
                self.small.append(time.perf_counter() - started)
                started = time.perf_counter()
                health.Check(health_pb2.HealthCheckRequest(), timeout=30)
                self.health.append(time.perf_counter() - started)
                time.sleep(0.01)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


def _zeros_table(stub: pb_grpc.SynthesizerStub, model: str, n_rows: int) -> pb.Table:
    info = stub.GetModel(pb.GetModelRequest(model=model)).model
    table = pb.Table(num_rows=n_rows)
    for column in info.schema.columns:
        table.columns.add(name=column.name, value_type=pb.VALUE_TYPE_FLOAT32, values=bytes(4 * n_rows))
    return table


def _score_while_watched(server: ServeProcess, n_rows: int) -> None:
    idle = server.rss_bytes()
    with grpc.insecure_channel(server.target, options=CHANNEL_OPTIONS) as channel:
        stub = pb_grpc.SynthesizerStub(channel)
        table = _zeros_table(stub, "digits-vae", n_rows)
        watch = Watch(server, "digits-vae")
        started = time.perf_counter()
        response = stub.ScoreDensity(pb.ScoreDensityRequest(model="digits-vae", rows=table), timeout=600)
        took = time.perf_counter() - started
        watch.stop()
    growth = (max(watch.rss) - idle) / MB
    print(
        f"digits-vae ScoreDensity {n_rows} rows: {took:.1f} s, RSS +{growth:.0f} MB peak; one-row Sample of the "
        f"same model max {max(watch.small):.3f} s, health max {max(watch.health):.3f} s"
    )
    assert response.num_rows == n_rows and np.isfinite(np.frombuffer(response.log_density, "<f4")).all()
    assert growth < RSS_BUDGET_MB
    assert max(watch.small) < 1.0 and max(watch.health) < 1.0  # heavy runs are short: others interleave


def test_a_heavy_density_request_is_run_in_short_runs(served: ServeProcess) -> None:
    _score_while_watched(served, 5_000)


@pytest.mark.slow
def test_a_hundred_thousand_row_density_request(served: ServeProcess) -> None:
    _score_while_watched(served, 100_000)  # 25.6 MB of float32: within the default 32 MiB message limit


def test_the_largest_unary_sample_and_a_burst_of_them_stay_within_budget(served: ServeProcess) -> None:
    idle = served.rss_bytes()
    with grpc.insecure_channel(served.target, options=CHANNEL_OPTIONS) as channel:
        stub = pb_grpc.SynthesizerStub(channel)
        request = pb.SampleRequest(model="breast-cancer-vae", num_rows=120_000, seed=5)  # a 29 MB response
        watch = Watch(served, "breast-cancer-vae")
        response = stub.Sample(request, timeout=120)
        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            burst = list(pool.map(lambda seed: _code(stub, request, seed), range(12)))
        watch.stop()
    growth = (max(watch.rss) - idle) / MB
    codes = {code: burst.count(code) for code in set(burst)}
    print(
        f"breast-cancer-vae Sample 120,000 rows ({response.ByteSize() / MB:.0f} MB): then 12 at once {codes}; RSS "
        f"+{growth:.0f} MB peak; one-row Sample max {max(watch.small):.3f} s, health max {max(watch.health):.3f} s"
    )
    assert response.rows.num_rows == 120_000
    assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED"} and codes.get("OK", 0) >= 1
    assert codes.get("RESOURCE_EXHAUSTED", 0) >= 1  # the memory budget refused part of the burst
    assert growth < RSS_BUDGET_MB
    assert max(watch.small) < 1.0 and max(watch.health) < 1.0
    deadline = time.monotonic() + 12  # freed memory goes back to the OS (memory_trim_interval_s = 5 s)
    while served.rss_bytes() - idle > 128 * MB and time.monotonic() < deadline:
        time.sleep(0.2)
    assert served.rss_bytes() - idle < 128 * MB


def _code(stub: pb_grpc.SynthesizerStub, request: pb.SampleRequest, seed: int) -> str:
    request = pb.SampleRequest(model=request.model, num_rows=request.num_rows, seed=seed)
    try:
        stub.Sample(request, timeout=120)
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
            assert "max_inflight_bytes" in (error.details() or "")
        return error.code().name
    return "OK"
