"""Serving benchmark: saturated efficiency, small-request overhead, idle latency, and a 10M-row stream.

Starts `synthserve serve` (N worker processes sharing the port through SO_REUSEPORT, one ONNX Runtime
intra-op thread each) on the shipped model store and drives it from this process with grpc.aio clients:
  (1) 10,000-row Sample requests from 16 concurrent clients, served rows/s over the same work (noise from a
      seed, one session run, the output buffers) done in one process without gRPC, at the same batch size on
      the same number of threads (target >= 0.85);
  (2) one-row Sample requests from 64 concurrent clients, throughput and p99 over the health Check RPC's under
      the same load (target >= 0.8, p99 <= 1.5x), with batching on and off for each model;
  (3) idle p50 latency of a one-row Sample (target <= 1 ms);
  (4) one SampleStream of 10M rows (target >= 1M rows/s, server RSS growth <= 100 MB).
Usage: python benchmarks/serving.py [--model-store model_store] [--duration-s 5] [--workers 2] [--clients 64]
"""

# ruff: noqa: E402  (sys.path is fixed before the package imports, see below)
from __future__ import annotations

import sys
from pathlib import Path

# Run as `python benchmarks/serving.py`, this file's directory leads sys.path and its name would shadow the
# `serving` package; the repository root takes its place.
ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]

import argparse
import asyncio
import os
import socket
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import grpc
import numpy as np
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

from serving.config import RuntimeConfig
from serving.proto import synthesizer_pb2 as pb
from serving.proto import synthesizer_pb2_grpc as pb_grpc
from serving.registry import LoadedModel, Registry
from synthserve.contract import LabelRuns, draw_noise, largest_remainder


@dataclass
class Load:
    requests: int
    rows: int
    seconds: float
    latencies_s: list[float]
    server_cpu_s: float = float("nan")  # CPU time of the server processes while measuring

    @property
    def cpu_us_per_request(self) -> float:
        return 1e6 * self.server_cpu_s / self.requests

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_s, q) * 1000) if self.latencies_s else float("nan")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def server(store: Path, workers: int, *extra: str):  # type: ignore[no-untyped-def]
    port = free_port()
    command = [sys.executable, "-m", "synthserve.cli", "serve", "--model-store", str(store), "--port", str(port)]
    # No periodic rescans: the served models stay those this process loaded for its in-process baselines.
    command += ["--metrics-port", "-1", "--workers", str(workers), "--reload-interval-s", "0", *extra]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        target = f"127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                with grpc.insecure_channel(target) as channel:
                    status = (
                        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1).status
                    )
                if status == health_pb2.HealthCheckResponse.SERVING:
                    break
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("server did not start")
            time.sleep(0.2)
        time.sleep(1.0 if workers > 1 else 0.1)  # the other workers finish loading
        yield target, process
    finally:
        process.terminate()
        process.wait(timeout=30)


def channels(target: str, count: int) -> list[grpc.aio.Channel]:
    """Separate connections, so SO_REUSEPORT spreads them over the worker processes."""
    options = [("grpc.use_local_subchannel_pool", 1), ("grpc.max_receive_message_length", 1 << 30)]
    return [grpc.aio.insecure_channel(target, options=[*options, ("grpc.channel_id", i)]) for i in range(count)]


async def drive(
    target: str,
    concurrency: int,
    duration_s: float,
    make_call: Callable[[grpc.aio.Channel], Callable[[], Awaitable[int]]],
    server_pids: list[int] | None = None,
) -> Load:
    """`concurrency` clients loop for `duration_s` (after a short warm-up); each call returns rows received."""
    open_channels = channels(target, min(concurrency, 8))
    calls = [make_call(open_channels[i % len(open_channels)]) for i in range(concurrency)]
    latencies: list[float] = []
    counts = [0, 0]
    measuring = False
    stop_at = 0.0

    async def client(call: Callable[[], Awaitable[int]]) -> None:
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            rows = await call()
            if measuring:
                latencies.append(time.perf_counter() - started)
                counts[0] += 1
                counts[1] += rows

    stop_at = time.perf_counter() + 1.0  # warm-up
    await asyncio.gather(*(client(c) for c in calls))
    measuring = True
    processes = [psutil.Process(pid) for pid in server_pids or ()]
    cpu_before = sum(sum(p.cpu_times()[:2]) for p in processes)
    started = time.perf_counter()
    stop_at = started + duration_s
    await asyncio.gather(*(client(c) for c in calls))
    seconds = time.perf_counter() - started
    server_cpu_s = sum(sum(p.cpu_times()[:2]) for p in processes) - cpu_before if processes else float("nan")
    for channel in open_channels:
        await channel.close(None)
    return Load(counts[0], counts[1], seconds, latencies, server_cpu_s)


def sample_call(model: str, rows: int) -> Callable[[grpc.aio.Channel], Callable[[], Awaitable[int]]]:
    def make(channel: grpc.aio.Channel) -> Callable[[], Awaitable[int]]:
        stub = pb_grpc.SynthesizerStub(channel)
        seed = [0]

        async def call() -> int:
            seed[0] += 1
            response = await stub.Sample(pb.SampleRequest(model=model, num_rows=rows, seed=seed[0]))
            return int(response.rows.num_rows)

        return call

    return make


def check_call(channel: grpc.aio.Channel) -> Callable[[], Awaitable[int]]:
    stub = health_pb2_grpc.HealthStub(channel)

    async def call() -> int:
        await stub.Check(health_pb2.HealthCheckRequest())
        return 0

    return call


def baseline_rows_per_s(model: LoadedModel, batch_rows: int, threads: int, duration_s: float) -> float:
    """The same work without gRPC: noise from a seed, one session run, the columnar output buffers."""
    manifest = model.manifest
    spec = manifest.graphs["sample"]
    label_input = spec.input_named("label")
    runs = None
    if manifest.schema.label is not None:
        counts = largest_remainder(batch_rows, manifest.schema.label.priors)
        runs = LabelRuns(tuple(range(len(counts))), counts)
    done = [0] * threads
    stop = threading.Event()

    def work(index: int) -> None:
        seed = index * 1_000_000
        while not stop.is_set():
            seed += 1
            feeds = {
                t.name: draw_noise(seed, j, 0, batch_rows, t.row_shape, t.distribution or "normal")
                for j, t in enumerate(spec.noise_inputs)
            }
            labels = runs.slice(0, batch_rows) if runs is not None else None
            if label_input is not None and labels is not None:
                feeds[label_input] = labels
            rows = model.runtime.run("sample", feeds)[0]
            model.table_encoder.encode(rows, labels).SerializeToString()
            done[index] += batch_rows

    with ThreadPoolExecutor(threads) as pool:
        futures = [pool.submit(work, i) for i in range(threads)]
        time.sleep(1.0)
        start_rows, started = sum(done), time.perf_counter()
        time.sleep(duration_s)
        rows, seconds = sum(done) - start_rows, time.perf_counter() - started
        stop.set()
        for future in futures:
            future.result()  # a failed worker must not pass for a slow one
    if rows == 0:
        raise RuntimeError(f"{model.name}: no batch of {batch_rows} rows finished in {duration_s} s")
    return rows / seconds


async def stream_rows(target: str, model: str, n_rows: int, server_pids: list[int]) -> tuple[float, float]:
    """(rows/s, peak server RSS growth in MB) of one SampleStream."""
    processes = [psutil.Process(pid) for pid in server_pids]
    before = sum(p.memory_info().rss for p in processes)
    peak = [before]
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.05):
            peak[0] = max(peak[0], sum(p.memory_info().rss for p in processes))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    (channel,) = channels(target, 1)
    stub = pb_grpc.SynthesizerStub(channel)
    received = 0
    started = time.perf_counter()
    async for chunk in stub.SampleStream(pb.SampleStreamRequest(model=model, num_rows=n_rows, seed=1)):
        received += chunk.rows.num_rows
    seconds = time.perf_counter() - started
    stop.set()
    watcher.join()
    await channel.close(None)
    assert received == n_rows, (received, n_rows)
    return n_rows / seconds, (peak[0] - before) / 1e6


def served_models(target: str, wanted: list[str]) -> list[str]:
    """`wanted`, less any model this server did not load (the store may change while a benchmark starts)."""
    with grpc.insecure_channel(target) as channel:
        served = {m.name for m in pb_grpc.SynthesizerStub(channel).ListModels(pb.ListModelsRequest()).models}
    missing = [n for n in wanted if n not in served]
    if missing:
        print(f"# not served, skipped: {', '.join(missing)}")
    return [n for n in wanted if n in served]


def worker_pids(process: subprocess.Popen[bytes]) -> list[int]:
    parent = psutil.Process(process.pid)
    children = parent.children(recursive=True)
    return [c.pid for c in children if "python" in c.name().lower()] or [parent.pid]


def idle_p50_ms(target: str, model: str, count: int = 500) -> float:
    latencies = []
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.SynthesizerStub(channel)
        for i in range(count + 50):
            started = time.perf_counter()
            stub.Sample(pb.SampleRequest(model=model, num_rows=1, seed=i))
            if i >= 50:
                latencies.append(time.perf_counter() - started)
    return float(np.median(latencies) * 1000)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-store", type=Path, default=ROOT / "model_store")
    parser.add_argument("--duration-s", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--models", default=None, help="comma-separated subset (default: every shipped model)")
    parser.add_argument("--stream-model", default="breast-cancer-flow")
    parser.add_argument("--stream-rows", type=int, default=10_000_000)
    parser.add_argument("--clients", type=int, default=64, help="concurrent clients of (2) and (2b)")
    args = parser.parse_args(argv)

    registry = Registry.scan(args.model_store, RuntimeConfig(intra_op_threads=1))
    names = args.models.split(",") if args.models else registry.names()
    cores = os.cpu_count()
    print(
        f"# synthserve serving benchmark: {cores} cores, {args.workers} server workers, {args.duration_s:.0f} s/phase"
    )
    print(f"# load generator: this process (grpc.aio), same machine; load average {os.getloadavg()[0]:.1f} at start")
    with server(args.model_store, args.workers, "--max-batch-rows", "10000") as (target, _process):
        print("(1) saturated efficiency: 10,000-row Sample, 16 clients (server: --max-batch-rows 10000),")
        print("    vs in-process noise + ORT + output buffers at batch 10,000 on the same number of threads")
        print(f"{'model':<22} {'served rows/s':>14} {'in-process rows/s':>18} {'ratio':>7}")
        for name in served_models(target, names):
            served = asyncio.run(drive(target, 16, args.duration_s, sample_call(name, 10_000)))
            local = baseline_rows_per_s(registry.get(name), 10_000, args.workers, args.duration_s)
            ratio = served.rows_per_s / local
            print(f"{name:<22} {served.rows_per_s:>14,.0f} {local:>18,.0f} {ratio:>7.2f}")
    small_on: dict[str, Load] = {}
    with server(args.model_store, args.workers) as (target, process):
        pids = worker_pids(process)
        check = asyncio.run(drive(target, args.clients, args.duration_s, check_call, pids))
        print(
            f"\nhealth Check, {args.clients} clients: {check.rps:,.0f} req/s, p50 {check.percentile_ms(50):.2f} ms, "
            f"p99 {check.percentile_ms(99):.2f} ms, server CPU {check.cpu_us_per_request:.0f} us/request"
        )
        print(
            f"(2) one-row Sample, {args.clients} clients, batching on (default server), vs health Check under the "
            "same load"
        )
        print(
            f"{'model':<22} {'req/s':>8} {'/Check':>7} {'p50 ms':>7} {'p99 ms':>7} {'p99/Check':>10} {'CPU us/req':>11}"
        )
        names = served_models(target, names)
        for name in names:
            load = asyncio.run(drive(target, args.clients, args.duration_s, sample_call(name, 1), pids))
            small_on[name] = load
            print(
                f"{name:<22} {load.rps:>8,.0f} {load.rps / check.rps:>7.2f} {load.percentile_ms(50):>7.2f} "
                f"{load.percentile_ms(99):>7.2f} {load.percentile_ms(99) / check.percentile_ms(99):>10.2f} "
                f"{load.cpu_us_per_request:>11.0f}"
            )
        print("\n(3) idle latency, one-row Sample, one client, 500 requests")
        for name in names:
            print(f"{name:<22} p50 {idle_p50_ms(target, name):.3f} ms")
        if args.stream_model in registry.names():
            rate, rss_mb = asyncio.run(stream_rows(target, args.stream_model, args.stream_rows, pids))
            ceiling = baseline_rows_per_s(registry.get(args.stream_model), 2048, args.workers, args.duration_s)
            print(
                f"\n(4) one SampleStream of {args.stream_rows:,} rows from {args.stream_model}: {rate:,.0f} rows/s, "
                f"server RSS growth {rss_mb:.0f} MB\n    in-process ceiling (noise + ORT + buffers, 2,048-row "
                f"batches, {args.workers} threads): {ceiling:,.0f} rows/s; stream / ceiling {rate / ceiling:.2f}"
            )
    with server(args.model_store, args.workers, "--no-batching") as (target, _process):
        print(f"\n(2b) one-row Sample, {args.clients} clients: batching on vs off (--no-batching)")
        print(f"{'model':<22} {'on req/s':>9} {'off req/s':>10} {'gain':>6}")
        for name in served_models(target, names):
            off = asyncio.run(drive(target, args.clients, args.duration_s, sample_call(name, 1)))
            print(f"{name:<22} {small_on[name].rps:>9,.0f} {off.rps:>10,.0f} {small_on[name].rps / off.rps:>6.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
