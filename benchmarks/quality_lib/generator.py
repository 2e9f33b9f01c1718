"""synthserve as the benchmark sees it: trained through the `synthserve train` CLI, used through its ONNX graphs.

What is measured is what is served: rows come from `sample.onnx` and densities from `log_prob.onnx`, fed
with the contract's counter-based noise exactly as the server feeds them (docs/model_store.md), never from
the eager torch model. Only `synthserve.contract` and onnxruntime are imported, so the benchmark depends on
neither the training nor the serving package's internals.
"""

from __future__ import annotations

import os
import resource
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from synthserve.contract import (
    PLAIN_SAMPLING,
    GraphSpec,
    Manifest,
    SamplingOptions,
    Scores,
    class_index,
    load_manifest,
    model_versions,
    noise_feeds,
    sample_rows,
)
from synthserve.contract.sessions import open_session

__all__ = [
    "LABEL_COLUMN",
    "MAJORITY",
    "MINORITY",
    "OnnxModel",
    "TrainConfig",
    "TrainResult",
    "TrainingFailed",
    "feature_names",
    "train_model",
    "write_training_csv",
]

LABEL_COLUMN = "label"
MINORITY = "minority"
MAJORITY = "majority"
SCORING_SEED = 0  # the server's default seed for scoring noise (docs/model_store.md)


class TrainingFailed(RuntimeError):
    """`synthserve train` exited non-zero or exported nothing; the message carries its stderr tail."""


@dataclass(frozen=True)
class TrainConfig:
    """How every model of a run is trained: one configuration for all datasets (issue 4)."""

    family: str  # one of training.models.FAMILIES
    executable: str  # path of the `synthserve` console script
    epochs: int | None = None  # None: the shipped default
    seed: int = 0
    options: tuple[str, ...] = ()  # `synthserve train --option KEY=VALUE` items (e.g. coupling=spline)
    device: str = "cpu"
    timeout_s: float = 1800.0
    # The tracing ONNX exporter and no PNG plots: ~8 CPU-s less per call. Neither changes the model or its
    # rows (the exported graphs pass the same parity checks against the eager model either way).
    quick_export: bool = True

    @property
    def method(self) -> str:
        """The name its figures carry: the family, with its options when it has any (`flow[coupling=spline]`)."""
        return f"{self.family}[{';'.join(self.options)}]" if self.options else self.family


@dataclass(frozen=True)
class TrainResult:
    """The exported version and what the `synthserve train` process cost: wall and CPU (user + system) seconds.

    CPU seconds are what the 2-core budget is made of; wall seconds also count waiting for a shared CPU.
    """

    version_dir: Path
    wall_s: float
    cpu_s: float


def feature_names(width: int) -> list[str]:
    return [f"x{i}" for i in range(width)]


def write_training_csv(path: Path, x: np.ndarray, y: np.ndarray | None, integer_columns: tuple[bool, ...]) -> None:
    """The fold as the CLI reads it: whole-number columns as integers (so the trainer can see codes and counts),
    the label as the words `minority` / `majority`."""
    frame = pd.DataFrame(
        {
            name: x[:, i].round().astype(np.int64) if integer_columns[i] else x[:, i]
            for i, name in enumerate(feature_names(x.shape[1]))
        }
    )
    if y is not None:
        frame[LABEL_COLUMN] = np.where(y == 1, MINORITY, MAJORITY)
    frame.to_csv(path, index=False)


def train_model(csv_path: Path, name: str, model_store: Path, config: TrainConfig, conditional: bool) -> TrainResult:
    """Runs `synthserve train` on one CPU thread and returns the exported (latest) version directory."""
    argv = [
        config.executable,
        "train",
        "--data",
        str(csv_path),
        "--model",
        config.family,
        "--name",
        name,
        "--model-store",
        str(model_store),
        "--seed",
        str(config.seed),
        "--device",
        config.device,
    ]
    if conditional:
        argv += ["--label", LABEL_COLUMN]
    if config.epochs is not None:
        argv += ["--epochs", str(config.epochs)]
    for option in config.options:
        argv += ["--option", option]
    if config.quick_export:
        argv += ["--onnx-exporter", "torchscript", "--no-plots", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=config.timeout_s, check=False)
    wall_s = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise TrainingFailed(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    versions = model_versions(model_store / name)
    if not versions:
        raise TrainingFailed(f"{' '.join(argv)} exported no version under {model_store / name}")
    return TrainResult(model_store / name / str(versions[-1]), wall_s, cpu_s)


class OnnxModel:
    """One exported version: samples and scores rows in the benchmark's column order and original units."""

    def __init__(self, version_dir: Path) -> None:
        self.version_dir = version_dir
        self.manifest: Manifest = load_manifest(version_dir)
        self._sessions: dict[str, Any] = {}
        names = [c.name for c in self.manifest.schema.columns]
        expected = feature_names(len(names))
        if sorted(names) != sorted(expected):
            raise ValueError(f"{version_dir}: schema columns {names} are not the benchmark's {expected}")
        self._order = [names.index(n) for n in expected]  # graph column index of each benchmark column

    def _session(self, graph: str) -> tuple[Any, GraphSpec]:
        if graph not in self.manifest.graphs:
            raise ValueError(f"{self.version_dir}: the model has no {graph} graph ({self.manifest.capabilities})")
        spec = self.manifest.graphs[graph]
        if graph not in self._sessions:
            self._sessions[graph] = open_session(self.version_dir / spec.file)
        return self._sessions[graph], spec

    def class_index(self, label: str) -> int:
        return class_index(self.manifest, label, "label")

    def sample(
        self, n_rows: int, seed: int, label: str | None = None, options: SamplingOptions = PLAIN_SAMPLING
    ) -> np.ndarray:
        """`n_rows` rows (of class `label` for conditional models) as float64 in the benchmark's column order,
        drawn by the server's rule (synthserve.contract.sample_rows: noise, temperature, best-of-k)."""
        conditional = self.manifest.graphs["sample"].input_named("label") is not None
        if conditional and label is None:
            raise ValueError(f"{self.version_dir}: conditional model needs a label to sample")
        labels = np.full(n_rows, self.class_index(label), dtype=np.int64) if conditional and label else None
        rows = sample_rows(self.manifest.graphs, self._run, seed, labels, n_rows, options)
        return self._decode(np.asarray(rows, dtype=np.float64))

    def _run(self, graph: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        session, spec = self._session(graph)
        return list(session.run([t.name for t in spec.outputs], feeds))

    def scores(self, x: np.ndarray) -> Scores:
        """All the log_prob graph's outputs for the rows of `x` (benchmark order, original units): log p(x),
        posteriors and, where the graph serves one, the anomaly score; noise drawn with the server's seed 0."""
        spec = self.manifest.graphs["log_prob"]
        feed = noise_feeds(spec, SCORING_SEED, 0, len(x))
        feed["rows"] = self._encode(x).astype(np.float32)
        return Scores.from_outputs(spec, self._run("log_prob", feed))

    def _decode(self, rows: np.ndarray) -> np.ndarray:
        """Graph rows (codes for categorical columns) -> values, reordered to the benchmark's columns."""
        values = rows.copy()
        for i, column in enumerate(self.manifest.schema.columns):
            if column.kind == "categorical" and column.categories is not None:
                lookup = np.asarray([float(c) for c in column.categories])
                codes = np.clip(np.rint(rows[:, i]), 0, len(lookup) - 1).astype(np.int64)
                values[:, i] = lookup[codes]
        return values[:, self._order]

    def _encode(self, x: np.ndarray) -> np.ndarray:
        """Benchmark rows -> graph rows; a categorical value unseen in training takes its nearest category's code."""
        rows = x[:, np.argsort(self._order)].copy()
        for i, column in enumerate(self.manifest.schema.columns):
            if column.kind == "categorical" and column.categories is not None:
                lookup = np.asarray([float(c) for c in column.categories])
                rows[:, i] = np.abs(rows[:, i][:, None] - lookup[None, :]).argmin(axis=1)
        return rows
