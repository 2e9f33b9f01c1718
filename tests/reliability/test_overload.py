"""Overload: about 10x the measured capacity of a real `synthserve serve`, open loop.

Promise: excess requests get RESOURCE_EXHAUSTED promptly (not timeouts), admitted requests keep a p99 bounded
by the queue limit, server RSS stays bounded, and afterwards throughput is back to normal.
"""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest

from serving.proto import synthesizer_pb2 as pb
from serving.proto import synthesizer_pb2_grpc as pb_grpc
from tests.reliability.served import ServeProcess

ROWS = 20_000  # rows per request: large enough that the server, not the Python client, is the bottleneck
MAX_BATCH_ROWS = 4096
MAX_QUEUED_ROWS = 5 * ROWS
MAX_OUTSTANDING = 2000  # the open loop's own bound on calls in flight
RSS_BUDGET_MB = 256


@dataclass(frozen=True)
class Result:
    offered_rps: float
    codes: dict[str, int]
    admitted_p99_s: float
    refused_p99_s: float


async def _one(stub: pb_grpc.SynthesizerStub, seed: int) -> tuple[str, float]:
    started = time.perf_counter()
    try:
        await stub.Sample(pb.SampleRequest(model="gauss", version=1, num_rows=ROWS, seed=seed), timeout=20)
        code = "OK"
    except grpc.aio.AioRpcError as error:
        code = error.code().name
    return code, time.perf_counter() - started


async def capacity(target: str, seconds: float) -> float:
    """Closed loop, 4 callers: requests per second the server completes."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.SynthesizerStub(channel)
        done = 0
        end = time.perf_counter() + seconds

        async def caller(worker: int) -> None:
            nonlocal done
            while time.perf_counter() < end:
                code, _ = await _one(stub, worker)
                done += code == "OK"

        started = time.perf_counter()
        await asyncio.gather(*(caller(w) for w in range(4)))
        return done / (time.perf_counter() - started)


async def offer(target: str, rate_rps: float, seconds: float, sample_rss) -> Result:  # type: ignore[no-untyped-def]
    """Open loop: a request every 1/rate seconds whatever the answers (at most MAX_OUTSTANDING outstanding)."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.SynthesizerStub(channel)
        tasks: list[asyncio.Task[tuple[str, float]]] = []
        started = time.perf_counter()
        sent = 0
        while (now := time.perf_counter()) - started < seconds:
            due = int((now - started) * rate_rps) - sent
            for _ in range(due):
                if sum(not t.done() for t in tasks[-MAX_OUTSTANDING:]) < MAX_OUTSTANDING:
                    tasks.append(asyncio.ensure_future(_one(stub, sent)))
                sent += 1
            sample_rss()
            await asyncio.sleep(0.005)
        results = await asyncio.gather(*tasks)
    codes: dict[str, int] = {}
    for code, _ in results:
        codes[code] = codes.get(code, 0) + 1
    admitted = [s for code, s in results if code == "OK"]
    refused = [s for code, s in results if code == "RESOURCE_EXHAUSTED"]
    return Result(
        offered_rps=len(tasks) / seconds,
        codes=codes,
        admitted_p99_s=float(np.percentile(admitted, 99)) if admitted else 0.0,
        refused_p99_s=float(np.percentile(refused, 99)) if refused else 0.0,
    )


class Control:
    """A separate client on its own connection and thread: a one-row Sample of another model (its own queue) every
    100 ms with a 2 s deadline, all the while."""

    def __init__(self, target: str) -> None:
        self.outcomes: list[tuple[str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(target,))
        self._thread.start()

    def _run(self, target: str) -> None:
        with grpc.insecure_channel(target) as channel:
            stub = pb_grpc.SynthesizerStub(channel)
            while not self._stop.is_set():
                started = time.perf_counter()
                try:
                    stub.Sample(pb.SampleRequest(model="gauss-gan", num_rows=1, seed=1), timeout=2.0)
                    code = "OK"
                except grpc.RpcError as error:
                    code = error.code().name
                self.outcomes.append((code, time.perf_counter() - started))
                time.sleep(0.1)

    def stop(self) -> tuple[float, float]:
        """(share of calls that succeeded, p99 seconds); every call ends OK or past its deadline."""
        self._stop.set()
        self._thread.join()
        assert {code for code, _ in self.outcomes} <= {"OK", "DEADLINE_EXCEEDED"}, self.outcomes
        ok = sum(code == "OK" for code, _ in self.outcomes)
        return ok / max(1, len(self.outcomes)), float(np.percentile([s for _, s in self.outcomes], 99))


def histogram(metrics_port: int, name: str, labels: tuple[str, ...]) -> dict[float, float]:
    """Cumulative bucket counts {le: count} of one labelled Prometheus histogram, scraped from the server."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    buckets = {}
    for line in text.splitlines():
        if line.startswith(f"{name}_bucket{{") and all(label in line for label in labels):
            le = line.split('le="')[1].split('"')[0]
            buckets[float(le)] = float(line.rsplit(" ", 1)[1])
    return buckets


def p99_upper_bound(before: dict[float, float], after: dict[float, float]) -> float:
    """The smallest bucket bound holding 99 % of what was observed between two scrapes."""
    counts = {le: after[le] - before.get(le, 0.0) for le in sorted(after)}
    total = counts[float("inf")]
    return next(le for le, count in counts.items() if count >= 0.99 * total)


def run_overload(store: Path, seconds: float) -> None:
    # The server's defaults but for the queue: no stream or RPC limit, grpc core's pending-call bound raised
    # (ServerConfig.max_pending_rpcs), so that every excess call reaches the batcher's queue bound.
    args = (
        "--reload-interval-s",
        "0",
        "--max-batch-rows",
        str(MAX_BATCH_ROWS),
        "--max-queued-rows",
        str(MAX_QUEUED_ROWS),
        # No per-connection stream limit: the one lagging load-generator connection would otherwise also meet it
        # (responses it has not read keep their streams open), refused with REFUSED_STREAM (UNAVAILABLE).
        "--max-concurrent-streams",
        "0",
    )
    with ServeProcess(store, *args, "--metrics-port", "0") as server:
        assert server.metrics_port is not None
        wait = ("synthserve_queue_wait_seconds", ('model="gauss"', 'graph="sample"'))
        latency = ("synthserve_request_latency_seconds", ('model="gauss"', 'method="Sample"'))
        asyncio.run(capacity(server.target, 1.0))  # warm-up: sessions, arenas, connections
        before = asyncio.run(capacity(server.target, 2.0))
        baseline_rss = server.rss_bytes()
        peak = [baseline_rss]
        waits_before = histogram(server.metrics_port, *wait)
        latency_before = histogram(server.metrics_port, *latency)
        control = Control(server.target)
        result = asyncio.run(offer(server.target, 10 * before, seconds, lambda: peak.append(server.rss_bytes())))
        control_ok, control_p99_s = control.stop()
        queue_wait_p99_s = p99_upper_bound(waits_before, histogram(server.metrics_port, *wait))
        latency_p99_s = p99_upper_bound(latency_before, histogram(server.metrics_port, *latency))
        after = asyncio.run(capacity(server.target, 2.0))
    drain_s = MAX_QUEUED_ROWS / (before * ROWS)  # time to work off a full queue
    growth_mb = (max(peak) - baseline_rss) / 2**20
    print(
        f"overload {seconds:.0f} s: capacity {before:.1f} req/s ({before * ROWS:,.0f} rows/s), offered "
        f"{result.offered_rps:.0f} req/s, outcomes {result.codes}, admitted p99 {result.admitted_p99_s:.3f} s "
        f"(client-measured), server queue wait p99 <= {queue_wait_p99_s} s (full queue drains in {drain_s:.3f} s), "
        f"refused p99 {result.refused_p99_s:.3f} s (client), server Sample latency p99 <= {latency_p99_s} s, "
        f"RSS {baseline_rss / 2**20:.0f} MB "
        f"+{growth_mb:.0f} MB, after {after:.1f} req/s; control client {control_ok:.0%} OK, p99 {control_p99_s:.3f} s"
    )
    assert set(result.codes) <= {"OK", "RESOURCE_EXHAUSTED"}  # no timeouts, no cancellations, no other failure
    assert result.codes.get("RESOURCE_EXHAUSTED", 0) > result.codes.get("OK", 0)  # it was overloaded
    # The one Python client process cannot always offer the full 10x on 2 shared cores; the figure is reported.
    assert result.offered_rps >= 2 * before
    # Server-side, every Sample (refused or admitted) finished within a bucket of 0.5 s; client-measured times
    # add the load generator's event-loop lag on 2 shared cores, but stay far from the 20 s timeout.
    assert latency_p99_s <= 0.5 and result.refused_p99_s < 10.0
    # Admitted requests wait at most about one full queue (server-side histogram; the client-measured p99 also
    # holds the load generator's own event-loop lag).
    assert queue_wait_p99_s <= 0.25 and drain_s < 0.25
    # Client-measured, an admitted call costs what every call waits before a handler sees it (the refused calls'
    # p99: grpc core's queue and the load generator's lag, 7 s when another process took one of the 2 cores) plus
    # at most the queue-time bound (max_queue_time_s, 5 s).
    assert result.admitted_p99_s < result.refused_p99_s + 5.0
    assert growth_mb < RSS_BUDGET_MB  # the documented budget: idle + 256 MB (docs/reliability.md)
    assert after >= 0.4 * before  # recovered (noisy: 2 cores shared with other work)
    # Another model's one-row calls: they wait with the flood's calls in grpc core, before any handler can tell
    # them apart (docs/reliability.md, "what a Python gRPC server cannot refuse"): 57-60 % within 2 s measured.
    assert control_ok >= 0.25


@pytest.mark.serial  # latency bounds: alone on the machine
def test_ten_times_capacity_for_five_seconds(store: Path) -> None:
    run_overload(store, 5.0)


@pytest.mark.slow
def test_ten_times_capacity_for_thirty_seconds(store: Path) -> None:
    run_overload(store, 30.0)
