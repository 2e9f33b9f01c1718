"""Graph benchmark: each exported ONNX graph alone on one ONNX Runtime thread, the ceiling under the server.

For every model of `--model-store` and each of its graphs: rows/s at `--batch-rows` (noise and rows prepared
beforehand, so only the session runs) and the latency of a one-row run. Models that select candidates also get
a `balance` line: output rows/s of `Balance`'s rule (k candidates sampled, scored by log_prob and one kept, the
server's default k unless `--best-of` says otherwise), and the latency of one output row. With
`--baseline-store`, the same models of that store are timed in the same run, alternating with the first, and
the speed-up is printed (`--baseline-best-of`: the baseline's k, e.g. an older default).
Usage: python benchmarks/graphs.py [--model-store model_store] [--baseline-store DIR] [--models a,b]
"""

# ruff: noqa: E402  (sys.path is fixed before the package imports, see below)
from __future__ import annotations

import sys
from pathlib import Path

# Run as `python benchmarks/graphs.py`, the repository root must lead sys.path (see benchmarks/serving.py).
ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]

import argparse
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from synthserve.contract import (
    BALANCE_SAMPLING,
    GraphSpec,
    Manifest,
    SamplingOptions,
    latest_versions,
    load_manifest,
    noise_feeds,
    sample_rows,
    selects_by_posterior,
)
from synthserve.contract.sessions import open_session


@dataclass(frozen=True)
class Timing:
    rows_per_s: float
    one_row_us: float


def _feeds(manifest: Manifest, spec: GraphSpec, rows: np.ndarray, n: int) -> dict[str, np.ndarray]:
    """Inputs of `spec` for n rows: server-rule noise, labels cycling over the classes, rows of the sample graph,
    guidance weight 2."""
    feeds = noise_feeds(spec, seed=1, start_row=0, n_rows=n)
    n_classes = manifest.schema.n_classes
    for tensor in spec.inputs:
        if tensor.role == "label":
            feeds[tensor.name] = np.arange(n, dtype=np.int64) % max(n_classes, 1)
        elif tensor.role == "rows":
            feeds[tensor.name] = rows[:n]
        elif tensor.role == "guidance":  # the cost does not depend on the weight
            feeds[tensor.name] = np.full(n, 2.0, dtype=np.float32)
    return feeds


def _seconds_per_run(run: Callable[[], object], min_s: float) -> float:
    run()
    runs, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < min_s:
        run()
        runs += 1
    return elapsed / runs


class GraphTimer:
    """The sessions of one model version, timed graph by graph."""

    def __init__(self, directory: Path, batch_rows: int) -> None:
        self.manifest = load_manifest(directory / "manifest.json")
        self.sessions = {name: open_session(directory / spec.file) for name, spec in self.manifest.graphs.items()}
        sample = self.manifest.graphs["sample"]
        self.rows = self.sessions["sample"].run(None, _feeds(self.manifest, sample, np.empty(0), batch_rows))[0]
        self.batch_rows = batch_rows

    def graphs(self) -> list[str]:
        """The graphs to time, and `balance` where the model selects candidates."""
        return [*self.manifest.graphs, *(["balance"] if selects_by_posterior(self.manifest) else [])]

    def _run(self, graph: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return list(self.sessions[graph].run([t.name for t in self.manifest.graphs[graph].outputs], feeds))

    def time(self, graph: str, min_s: float, best_of: int = BALANCE_SAMPLING.best_of) -> Timing:
        if graph == "balance":
            options = SamplingOptions(BALANCE_SAMPLING.temperature, best_of)
            labels = np.arange(self.batch_rows, dtype=np.int64) % self.manifest.schema.n_classes
            graphs = self.manifest.graphs

            def balance(n: int) -> object:
                return sample_rows(graphs, self._run, 1, labels[:n], n, options)

            per_batch = _seconds_per_run(lambda: balance(self.batch_rows), min_s)
            return Timing(self.batch_rows / per_batch, 1e6 * _seconds_per_run(lambda: balance(1), min_s / 2))
        session, spec = self.sessions[graph], self.manifest.graphs[graph]
        big = _feeds(self.manifest, spec, self.rows, self.batch_rows)
        one = _feeds(self.manifest, spec, self.rows, 1)
        per_batch = _seconds_per_run(lambda: session.run(None, big), min_s)
        per_row = _seconds_per_run(lambda: session.run(None, one), min_s / 2)
        return Timing(self.batch_rows / per_batch, 1e6 * per_row)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-store", type=Path, default=ROOT / "model_store")
    parser.add_argument("--baseline-store", type=Path, default=None, help="time these versions too, side by side")
    parser.add_argument("--models", default=None, help="comma-separated subset (default: every model in the store)")
    parser.add_argument("--batch-rows", type=int, default=2048)
    parser.add_argument("--min-s", type=float, default=0.5, help="seconds of runs per figure")
    parser.add_argument("--best-of", type=int, default=BALANCE_SAMPLING.best_of, help="k of the balance line")
    parser.add_argument("--baseline-best-of", type=int, default=None, help="the baseline's k (default: --best-of)")
    args = parser.parse_args(argv)
    baseline_best_of = args.baseline_best_of or args.best_of
    versions = latest_versions(args.model_store)
    baselines = latest_versions(args.baseline_store) if args.baseline_store else {}
    names = args.models.split(",") if args.models else list(versions)
    load = os.getloadavg()[0]
    print(f"# graph benchmark: one ONNX Runtime thread, batch {args.batch_rows:,}, load average {load:.1f}")
    header = f"{'model':<20} {'graph':<13} {'rows/s':>10} {'1-row us':>9}"
    print(header + (f" {'baseline rows/s':>16} {'1-row us':>9} {'speed-up':>9}" if args.baseline_store else ""))
    for name in names:
        timer = GraphTimer(versions[name], args.batch_rows)
        baseline = GraphTimer(baselines[name], args.batch_rows) if args.baseline_store else None
        for graph in timer.graphs():
            now = timer.time(graph, args.min_s, args.best_of)
            extra = ""
            if baseline is not None and graph in baseline.graphs():
                # Before, between and after: a change in the machine's speed meets both stores alike.
                before = baseline.time(graph, args.min_s, baseline_best_of)
                again = timer.time(graph, args.min_s, args.best_of)
                now = Timing((now.rows_per_s + again.rows_per_s) / 2, (now.one_row_us + again.one_row_us) / 2)
                speed_up = now.rows_per_s / before.rows_per_s
                extra = f" {before.rows_per_s:>16,.0f} {before.one_row_us:>9.0f} {speed_up:>8.2f}x"
            print(f"{name:<20} {graph:<13} {now.rows_per_s:>10,.0f} {now.one_row_us:>9.0f}{extra}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
