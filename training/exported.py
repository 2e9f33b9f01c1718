"""Run an exported version through ONNX Runtime exactly as the server does (noise from `noise_feeds`).

Used for calibration, evaluation, tests and benchmarks, so every figure is measured on the shipped graphs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from synthserve.contract import GraphSpec, Manifest, SamplingOptions, Scores, load_manifest, noise_feeds
from synthserve.contract.sessions import open_session

__all__ = ["CHUNK_ROWS", "ExportedModel", "feeds_for"]

CHUNK_ROWS = 1024


def feeds_for(
    spec: GraphSpec,
    *,
    seed: int,
    start_row: int,
    n_rows: int,
    rows: np.ndarray | None = None,
    label: np.ndarray | None = None,
    guidance: float = 1.0,
) -> dict[str, np.ndarray]:
    """Inputs of one graph run: noise input j from stream j at the rows' request indices; a `sample_guided`
    graph's weight `guidance` for every row."""
    feeds = noise_feeds(spec, seed, start_row, n_rows)
    for tensor in spec.inputs:
        if tensor.role == "rows":
            if rows is None:
                raise ValueError(f"graph input {tensor.name!r} needs rows")
            feeds[tensor.name] = np.ascontiguousarray(rows, dtype=np.float32)
        elif tensor.role == "label":
            if label is None:
                raise ValueError(f"graph input {tensor.name!r} needs class indices")
            feeds[tensor.name] = np.ascontiguousarray(label, dtype=np.int64)
        elif tensor.role == "guidance":
            feeds[tensor.name] = np.full(n_rows, guidance, dtype=np.float32)
    return feeds


class ExportedModel:
    """ONNX Runtime sessions for one model-store version."""

    def __init__(self, version_dir: str | Path, threads: int = 1) -> None:
        self.directory = Path(version_dir)
        self.manifest: Manifest = load_manifest(self.directory)
        self.sessions = {
            name: open_session(self.directory / spec.file, threads) for name, spec in self.manifest.graphs.items()
        }

    def _run(
        self,
        graph: str,
        n: int,
        seed: int,
        rows: np.ndarray | None,
        label: np.ndarray | None,
        guidance: float = 1.0,
    ) -> list[np.ndarray]:
        spec = self.manifest.graphs[graph]
        chunks: list[list[np.ndarray]] = []
        for begin in range(0, n, CHUNK_ROWS):
            end = min(n, begin + CHUNK_ROWS)
            feeds = feeds_for(
                spec,
                seed=seed,
                start_row=begin,
                n_rows=end - begin,
                rows=None if rows is None else rows[begin:end],
                label=None if label is None else label[begin:end],
                guidance=guidance,
            )
            chunks.append(self.sessions[graph].run([o.name for o in spec.outputs], feeds))
        return [np.concatenate([c[i] for c in chunks]) for i in range(len(spec.outputs))]

    def sample(self, label: np.ndarray, seed: int, guidance: float = 1.0) -> np.ndarray:
        """Rows [N, D] for class indices `label` [N] (ignored by unconditional models); a guidance weight other
        than 1 runs the `sample_guided` graph (the server's rule: synthserve.contract.SamplingOptions.graph)."""
        graph = SamplingOptions(guidance=guidance).graph
        return self._run(graph, len(label), seed, None, label, guidance)[0]

    def scores(self, rows: np.ndarray, seed: int = 0) -> Scores:
        """Everything the log_prob graph says about `rows` (the anomaly score too, where it serves one), from one
        run; seed 0 as the server scores."""
        return Scores.from_outputs(self.manifest.graphs["log_prob"], self._run("log_prob", len(rows), seed, rows, None))

    def log_prob(self, rows: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(log p(x) [N], log p(x|c) [N, C], p(c|x) [N, C]); seed 0 as the server scores."""
        scores = self.scores(rows, seed)
        return scores.log_density, scores.class_log_density, scores.posteriors

    def encode(self, rows: np.ndarray, label: np.ndarray, seed: int = 0) -> np.ndarray:
        return self._run("encode", len(rows), seed, rows, label)[0]
