"""Hot reload of a live `synthserve serve` (rescanning every 0.2 s) under load.

Promise: a new version published while under load is verified and swapped in with 0 failed requests;
requests pinned to the old version keep working until it is retired (deleted); corrupt artifacts (sha256
mismatch, truncated ONNX with a matching sha256) are refused with a log line and
`synthserve_model_load_failures_total`, the previous version serving on; a deleted model unloads cleanly
(NOT_FOUND afterwards, no other failure).
"""

from __future__ import annotations

import collections
import hashlib
import json
import shutil
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from serving.proto import synthesizer_pb2 as pb
from serving.proto import synthesizer_pb2_grpc as pb_grpc
from serving.server import health_service_name
from tests.reliability.served import ServeProcess
from tests.serving.helpers import expected_rows, rows_of


def publish(source: Path, model_dir: Path, version: int, corrupt: str | None = None) -> None:
    """Writes a version the way training does: a hidden directory, renamed into place in one step."""
    staging = model_dir / f".publishing-{version}"
    shutil.copytree(source, staging)
    manifest = json.loads((staging / "manifest.json").read_text())
    manifest["version"] = version
    graph = staging / "sample.onnx"
    if corrupt == "sha256":
        graph.write_bytes(graph.read_bytes() + b"tampered")
    elif corrupt == "truncated":
        graph.write_bytes(graph.read_bytes()[: graph.stat().st_size // 2])
        manifest["files"]["sample.onnx"] = hashlib.sha256(graph.read_bytes()).hexdigest()
    (staging / "manifest.json").write_text(json.dumps(manifest))
    staging.rename(model_dir / str(version))


class Load:
    """One thread sending Sample requests for (model, version) and checking each answer's rows."""

    def __init__(self, target: str, model: str, version: int) -> None:
        self.outcomes: list[tuple[float, str, int]] = []  # (time, code name, served version)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(target, model, version))
        self._thread.start()

    def _run(self, target: str, model: str, version: int) -> None:
        with grpc.insecure_channel(target) as channel:
            stub = pb_grpc.SynthesizerStub(channel)
            seed = 0
            while not self._stop.is_set():
                seed += 1
                try:
                    response = stub.Sample(
                        pb.SampleRequest(model=model, version=version, num_rows=500, seed=seed), timeout=10
                    )
                except grpc.RpcError as error:
                    self.outcomes.append((time.monotonic(), error.code().name, 0))
                    time.sleep(0.005)
                    continue
                labels = np.frombuffer(response.rows.labels, "<i4").astype(np.int64)
                means_version = 1 if response.version == 1 else 2  # published versions reuse gauss/2's graphs
                exact = np.allclose(rows_of(response.rows), expected_rows(seed, labels, means_version), atol=2e-6)
                self.outcomes.append((time.monotonic(), "OK" if exact else "WRONG_ROWS", response.version))

    def stop(self) -> collections.Counter[str]:
        self._stop.set()
        self._thread.join(timeout=30)
        return collections.Counter(code for _, code, _ in self.outcomes)

    def versions_since(self, moment: float) -> set[int]:
        return {v for t, code, v in self.outcomes if t > moment and code == "OK"}


def wait_for(condition, timeout_s: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def load_failures(metrics_port: int, reason: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    prefix = f'synthserve_model_load_failures_total{{model="gauss",reason="{reason}"}} '
    return sum(float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix))


def test_hot_reload_under_load(store: Path, tmp_path: Path) -> None:
    live = tmp_path / "store"
    shutil.copytree(store / "gauss" / "1", live / "gauss" / "1")
    shutil.copytree(store / "gauss-gan", live / "gauss-gan")
    args = ("--reload-interval-s", "0.2", "--metrics-port", "0")
    with ServeProcess(live, *args) as server:
        assert server.metrics_port is not None
        latest, pinned, gan = (
            Load(server.target, "gauss", 0),
            Load(server.target, "gauss", 1),
            Load(server.target, "gauss-gan", 0),
        )
        time.sleep(0.5)
        published = time.monotonic()
        publish(store / "gauss" / "2", live / "gauss", 2)
        wait_for(lambda: 2 in latest.versions_since(published))
        swapped = max(t for t, code, v in latest.outcomes if v == 1 and code == "OK")  # last answer from v1

        corrupt_at = time.monotonic()
        publish(store / "gauss" / "2", live / "gauss", 3, corrupt="sha256")
        publish(store / "gauss" / "2", live / "gauss", 4, corrupt="truncated")
        wait_for(lambda: "gauss/3 refused (checksum)" in server.log() and "gauss/4 refused (load)" in server.log())
        time.sleep(0.5)
        assert latest.versions_since(corrupt_at) == {2}  # the previous version serves on
        assert load_failures(server.metrics_port, "checksum") == 1 and load_failures(server.metrics_port, "load") == 1

        retired_at = time.monotonic()
        shutil.rmtree(live / "gauss" / "1")
        wait_for(lambda: any(t > retired_at and code == "NOT_FOUND" for t, code, _ in pinned.outcomes))
        deleted_at = time.monotonic()
        shutil.rmtree(live / "gauss-gan")
        wait_for(lambda: any(t > deleted_at and code == "NOT_FOUND" for t, code, _ in gan.outcomes))
        time.sleep(0.3)
        with grpc.insecure_channel(server.target) as channel:
            gone = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=health_service_name("gauss-gan"))
            )
        latest_codes, pinned_codes, gan_codes = latest.stop(), pinned.stop(), gan.stop()
    print(f"reload: latest {dict(latest_codes)}, pinned v1 {dict(pinned_codes)}, deleted model {dict(gan_codes)}")
    assert set(latest_codes) == {"OK"}  # 0 failed requests through publish, corrupt versions and retirements
    assert all(v == 1 for t, code, v in latest.outcomes if t <= published) and swapped > published
    pinned_before = [code for t, code, _ in pinned.outcomes if t <= retired_at]
    pinned_after = [code for t, code, _ in pinned.outcomes if t > retired_at]
    assert set(pinned_before) == {"OK"} and set(pinned_after) <= {"OK", "NOT_FOUND"} and pinned_after[-1] == "NOT_FOUND"
    gan_before = [code for t, code, _ in gan.outcomes if t <= deleted_at]
    gan_after = [code for t, code, _ in gan.outcomes if t > deleted_at]
    assert set(gan_before) == {"OK"} and set(gan_after) <= {"OK", "NOT_FOUND"} and gan_after[-1] == "NOT_FOUND"
    assert gone.status == health_pb2.HealthCheckResponse.NOT_SERVING
