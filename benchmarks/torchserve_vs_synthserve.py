"""TorchServe 0.12 vs synthserve: the same exported model under the same load, through both servers in one run.

Builds a .mar of one model-store version (`synthserve torchserve-archive`, 2 TorchServe workers, ONNX Runtime
handler) and serves it with real TorchServe on loopback; serves the same version with `synthserve serve` in its
default configuration but for `--workers` (as many server processes as TorchServe has workers, 2: the same
cores for both). Both first answer the same seed, and the rows are compared. Then closed-loop clients in
this process (asyncio: aiohttp on TorchServe's REST API, grpc.aio on synthserve) send Sample requests of 1 and
1,000 rows with 1, 8 and 64 in flight, a new seed per request; TorchServe answers npy arrays by default, its
fastest encoding. After a warm-up each cell reports throughput (req/s, rows/s), p50/p99 latency and the load
generator's own CPU use, then the synthserve/TorchServe ratios.
Targets (issue 5): synthserve >= 2x TorchServe's throughput on one-row requests, >= 3x on 1,000-row requests,
each with a lower p99.

    .venv/bin/python benchmarks/torchserve_vs_synthserve.py --model-store model_store --model abalone19-flow
"""

# ruff: noqa: E402  (sys.path is fixed before the package imports, see below)
from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's directory leads sys.path and benchmarks/serving.py would shadow the `serving`
# package; the repository root takes its place.
ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import aiohttp
import grpc
import numpy as np

from serving.client import SynthClient
from serving.proto import synthesizer_pb2 as pb
from serving.proto import synthesizer_pb2_grpc as pb_grpc
from torchserve_handler.archive import ArchiveConfig, build_archive, resolve_version
from torchserve_handler.local import LocalTorchServe, TorchServeConfig, free_port

__all__ = ["BenchConfig", "Cell", "main"]


@dataclass(frozen=True)
class BenchConfig:
    model_store: Path
    model: str
    version: int | None = None
    concurrency: tuple[int, ...] = (1, 8, 64)
    rows_per_request: tuple[int, ...] = (1, 1000)
    duration_s: float = 5.0
    warmup_s: float = 1.0
    torchserve_workers: int = 2
    synthserve_workers: int = 2  # server processes sharing the port (SO_REUSEPORT), one per TorchServe worker
    # npy: TorchServe's fastest answer (one float32 array); json spends most of a 1,000-row request on floats.
    torchserve_encoding: str = "npy"
    grpc_channels: int = 4  # synthserve clients spread over a few HTTP/2 connections
    startup_timeout_s: float = 120.0


@dataclass(frozen=True)
class Cell:
    """One server under one load: what the closed-loop clients measured after the warm-up."""

    server: str
    rows_per_request: int
    concurrency: int
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    client_cpu: float  # the load generator's CPU seconds per wall second (1.0 = one core busy)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def rows_per_s(self) -> float:
        return self.rps * self.rows_per_request


Call = Callable[[int], Awaitable[None]]  # sends one request with the given seed; raises on failure


async def drive(call: Call, concurrency: int, warmup_s: float, duration_s: float) -> tuple[int, float, list[float]]:
    """Closed loop: `concurrency` clients, each sending its next request when the last one returns."""
    seeds = iter(range(1, 1 << 62))
    start = time.perf_counter()
    measure_from = start + warmup_s
    stop_at = measure_from + duration_s
    latencies: list[float] = []

    async def client() -> None:
        while (now := time.perf_counter()) < stop_at:
            await call(next(seeds))
            done = time.perf_counter()
            if now >= measure_from:
                latencies.append(done - now)

    await asyncio.gather(*(client() for _ in range(concurrency)))
    # Requests that started in the window and ended after it count; the window grows to their end.
    return len(latencies), time.perf_counter() - measure_from, latencies


async def measure(server: str, call: Call, rows: int, concurrency: int, config: BenchConfig) -> Cell:
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    requests, seconds, latencies = await drive(call, concurrency, config.warmup_s, config.duration_s)
    cpu = (time.process_time() - cpu_start) / (time.perf_counter() - wall_start)
    p50, p99 = np.percentile(np.asarray(latencies) * 1000, [50, 99])
    return Cell(server, rows, concurrency, requests, seconds, float(p50), float(p99), cpu)


@contextmanager
def synthserve_server(store: Path, workers: int, timeout_s: float) -> Iterator[str]:
    """`synthserve serve` with its defaults but for the ports and `--workers`, ready once it lists a model; ends
    with its process group."""
    port = free_port()
    command = [str(Path(sys.executable).parent / "synthserve"), "serve", "--model-store", str(store)]
    command += ["--port", str(port), "--metrics-port", str(free_port()), "--workers", str(workers)]
    log = store.parent / "synthserve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    target = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"synthserve serve exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            with contextlib.suppress(grpc.RpcError), SynthClient(target, timeout_s=2) as client:
                if client.models():
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"synthserve serve not ready in {timeout_s} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.25)
        yield target
    finally:
        with contextlib.suppress(ProcessLookupError):  # it may have exited already
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def compare_rows(url: str, target: str, model: str, n_rows: int, seed: int) -> str:
    """Same seed through both servers: equal within float32 rounding (else an error), and whether bit-identical."""
    with SynthClient(target) as client:
        frame = client.sample(model, n_rows, seed=seed)
    body = json.dumps({"n": n_rows, "seed": seed}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        rows = json.loads(response.read())["rows"]
    if list(rows) != list(frame.columns):
        raise AssertionError(f"columns differ: {list(rows)} vs {list(frame.columns)}")
    worst = 0.0
    for name in frame.columns:
        ours, theirs = frame[name].to_numpy(), np.asarray(rows[name])
        if ours.dtype.kind == "f":
            if not np.allclose(ours, theirs, rtol=1e-6, atol=1e-6):
                raise AssertionError(f"column {name!r} differs beyond float32 rounding")
            worst = max(worst, float(np.max(np.abs(ours - theirs))))
        elif ours.tolist() != theirs.tolist():
            raise AssertionError(f"column {name!r} differs between the servers")
    return "bit-identical" if worst == 0.0 else f"equal within float32 rounding (max |diff| {worst:.3g})"


async def run_cells(url: str, target: str, config: BenchConfig) -> list[Cell]:
    """Every (rows, clients) cell on TorchServe, then at once on synthserve, so both see the same machine state."""
    cells = []
    channels = [grpc.aio.insecure_channel(target) for _ in range(config.grpc_channels)]
    stubs = [pb_grpc.SynthesizerStub(channel) for channel in channels]
    try:
        for rows in config.rows_per_request:
            for concurrency in config.concurrency:
                connector = aiohttp.TCPConnector(limit=concurrency)
                async with aiohttp.ClientSession(connector=connector) as session:

                    async def torchserve(seed: int, rows: int = rows, session: aiohttp.ClientSession = session) -> None:
                        body = {"n": rows, "seed": seed, "encoding": config.torchserve_encoding}
                        async with session.post(url, json=body) as response:
                            answer = await response.read()
                            if response.status != 200:
                                raise RuntimeError(f"TorchServe answered {response.status}: {answer[:300]!r}")

                    cells.append(await measure("torchserve", torchserve, rows, concurrency, config))

                async def synthserve(seed: int, rows: int = rows) -> None:
                    stub = stubs[seed % len(stubs)]
                    await stub.Sample(pb.SampleRequest(model=config.model, num_rows=rows, seed=seed))

                cells.append(await measure("synthserve", synthserve, rows, concurrency, config))
    finally:
        for channel in channels:
            await channel.close(None)
    return cells


def report(cells: list[Cell]) -> str:
    by_key = {(c.server, c.rows_per_request, c.concurrency): c for c in cells}
    header = (
        "| rows/req | clients | TorchServe req/s | rows/s | p50 ms | p99 ms | synthserve req/s | rows/s | p50 ms "
        "| p99 ms | throughput ratio | p99 ratio | client CPU (TS / ss) |"
    )
    lines = [header, "|" + "---|" * 13]
    for (server, rows, concurrency), ts in by_key.items():
        if server != "torchserve":
            continue
        ss = by_key[("synthserve", rows, concurrency)]
        lines.append(
            f"| {rows:,} | {concurrency} | {ts.rps:,.0f} | {ts.rows_per_s:,.0f} | {ts.p50_ms:.2f} | {ts.p99_ms:.2f} "
            f"| {ss.rps:,.0f} | {ss.rows_per_s:,.0f} | {ss.p50_ms:.2f} | {ss.p99_ms:.2f} "
            f"| {ss.rps / ts.rps:.2f}x | {ss.p99_ms / ts.p99_ms:.2f} | {ts.client_cpu:.2f} / {ss.client_cpu:.2f} |"
        )
    return "\n".join(lines)


def run(config: BenchConfig) -> tuple[str, list[Cell]]:
    version_dir = resolve_version(config.model_store, config.model, config.version)
    with tempfile.TemporaryDirectory(prefix="ts-vs-ss-") as tmp:
        root = Path(tmp)
        # synthserve serves a store holding this one version, so both servers load exactly the same files.
        store = root / "store"
        shutil.copytree(version_dir, store / config.model / version_dir.name, ignore=shutil.ignore_patterns("*.pt"))
        build_archive(
            ArchiveConfig(
                store, config.model, root / "mars", version=int(version_dir.name), workers=config.torchserve_workers
            )
        )
        ts_config = TorchServeConfig(root / "mars", root / "torchserve", startup_timeout_s=config.startup_timeout_s)
        with (
            LocalTorchServe(ts_config) as torchserve,
            synthserve_server(store, config.synthserve_workers, config.startup_timeout_s) as target,
        ):
            url = f"{torchserve.inference_url}/predictions/{config.model}"
            parity = compare_rows(url, target, config.model, 1000, seed=20261121)
            cells = asyncio.run(run_cells(url, target, config))
    return parity, cells


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-store", type=Path, default=ROOT / "model_store")
    parser.add_argument("--model", default="abalone19-flow", help="default: the shipped 8-column flow")
    parser.add_argument("--version", type=int, default=None)
    parser.add_argument("--duration-s", type=float, default=BenchConfig.duration_s, help="measured seconds per cell")
    parser.add_argument("--warmup-s", type=float, default=BenchConfig.warmup_s)
    parser.add_argument("--concurrency", default="1,8,64", help="clients in flight, comma-separated")
    parser.add_argument("--rows", default="1,1000", help="rows per request, comma-separated")
    parser.add_argument("--torchserve-encoding", choices=("npy", "json"), default=BenchConfig.torchserve_encoding)
    parser.add_argument("--synthserve-workers", type=int, default=BenchConfig.synthserve_workers)
    parser.add_argument("--json", type=Path, default=None, help="also write every cell as JSON here")
    args = parser.parse_args(argv)
    config = BenchConfig(
        model_store=args.model_store,
        model=args.model,
        version=args.version,
        concurrency=tuple(int(c) for c in args.concurrency.split(",")),
        rows_per_request=tuple(int(r) for r in args.rows.split(",")),
        duration_s=args.duration_s,
        warmup_s=args.warmup_s,
        torchserve_encoding=args.torchserve_encoding,
        synthserve_workers=args.synthserve_workers,
    )
    for name, values in (("--concurrency", config.concurrency), ("--rows", config.rows_per_request)):
        if min(values) < 1:
            parser.error(f"{name} values must be positive integers, got {values}")
    started = time.perf_counter()
    parity, cells = run(config)
    print(f"model {config.model}; same seed through both servers: {parity}")
    print(
        f"TorchServe: {config.torchserve_workers} workers, {config.torchserve_encoding} responses; synthserve: "
        f"defaults, {config.synthserve_workers} worker processes"
    )
    print(
        f"{os.cpu_count()} CPUs on this machine; {config.duration_s:g} s per cell after {config.warmup_s:g} s warm-up"
    )
    print(report(cells))
    print(f"total {time.perf_counter() - started:.0f} s")
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(c) | {"rps": c.rps, "rows_per_s": c.rows_per_s} for c in cells]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
