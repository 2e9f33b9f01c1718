"""Evaluation of an exported version: fidelity, privacy and utility metrics, calibration, report.json and plots.

Everything runs on the exported ONNX graphs (what the server will serve), with noise drawn by the contract's
rule, and judges generated rows as served (`training.features.served_rows`). All figures go into report.json and
the manifest's `metrics` (hence `GetModel`):
- fidelity (`c2st_auc`, `column_fidelity`, `mean_ks`, `mean_tv`, `mean_correlation_difference`,
  `collapsed_columns` of `varying_columns`): synthetic rows of the held-out rows' classes against the held-out
  rows (`training.fidelity`).
- privacy (`privacy`): distances to the closest training record, synthetic against held-out real rows, and exact
  copies (`training.privacy`).
- utility (`utility`, labelled tables): train on synthetic, test on real against train on real
  (`training.utility`).
- `quality_gate`: `training.gate.judge`'s verdict on these figures.
DCR and TSTR use at most MAX_PAIRED_ROWS query / training rows, so they take a few seconds on any table.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from synthserve.contract import Calibration, Schema, Scores
from training.data import Prepared
from training.exported import ExportedModel
from training.features import EVALUATION_SEED, design_matrix, served_rows
from training.fidelity import c2st_auc, collapsed_columns, column_distances, correlation
from training.gate import judge, verdict
from training.plots import plot_correlation_difference, plot_image_grid, plot_losses, plot_marginals
from training.privacy import privacy_metrics
from training.utility import utility_metrics

__all__ = [
    "CALIBRATION_FPR",
    "REPORT_FILE",
    "Evaluation",
    "c2st_auc",  # re-exported: benchmarks/fidelity_lib/measures.py imports it from here
    "calibrate",
    "evaluate_prepared",
    "evaluate_version",
    "sample_metrics",
]

CALIBRATION_FPR = (0.001, 0.005, 0.01, 0.05, 0.1, 0.2)
REPORT_FILE = "report.json"


@dataclass(frozen=True)
class Evaluation:
    metrics: dict[str, Any]
    calibration: Calibration | None
    files: tuple[str, ...]  # report and plot files written


_BIG = float(np.finfo(np.float32).max)


def _finite(values: np.ndarray, nan: float) -> np.ndarray:
    """float64 `values` with infinities at +-_BIG and NaN at `nan`: finite scores that JSON holds (a quantile
    between -inf and a number is NaN)."""
    return np.nan_to_num(values.astype(np.float64), nan=nan, posinf=_BIG, neginf=-_BIG)


def calibrate(scores: Scores) -> Calibration:
    """Quantiles at CALIBRATION_FPR of the held-out rows' log p(x) (lower tail) and of their anomaly score where
    the graph serves one (upper tail); `scores` come from the log_prob graph with seed 0, as the server scores."""
    # A row whose log p(x) is -inf or NaN (a value no training row had) counts as the most anomalous.
    quantiles = np.quantile(_finite(scores.log_density, nan=-_BIG), CALIBRATION_FPR)
    anomaly = scores.anomaly_score
    upper = None
    if anomaly is not None:
        upper = tuple(float(q) for q in np.quantile(_finite(anomaly, nan=_BIG), 1.0 - np.asarray(CALIBRATION_FPR)))
    return Calibration(CALIBRATION_FPR, tuple(float(q) for q in quantiles), len(scores.log_density), upper)


def sample_metrics(
    heldout_rows: np.ndarray,
    heldout_labels: np.ndarray,
    synthetic: np.ndarray,
    schema: Schema,
    train_rows: np.ndarray | None = None,
    train_labels: np.ndarray | None = None,
) -> dict[str, Any]:
    """Fidelity and privacy of served synthetic rows [N, D] drawn for the classes `heldout_labels` [N] (privacy None
    without training rows): the figures the quality gate judges."""
    distances = column_distances(heldout_rows, synthetic, schema)
    ks = [v["ks"] for v in distances.values() if "ks" in v]
    tv = [v["tv"] for v in distances.values() if "tv" in v]
    collapsed, varying = collapsed_columns(heldout_rows, synthetic, heldout_labels, schema)
    privacy = None
    if train_rows is not None and train_labels is not None and len(train_rows):
        privacy = privacy_metrics(train_rows, train_labels, heldout_rows, synthetic, heldout_labels, schema)
    return {
        "n_heldout": len(heldout_rows),
        "c2st_auc": c2st_auc(
            design_matrix(heldout_rows, heldout_labels, schema), design_matrix(synthetic, heldout_labels, schema)
        ),
        "mean_ks": float(np.mean(ks)) if ks else None,
        "mean_tv": float(np.mean(tv)) if tv else None,
        "column_fidelity": distances,
        "collapsed_columns": collapsed,
        "varying_columns": varying,
        "privacy": privacy,
    }


def evaluate_version(
    model: ExportedModel,
    heldout_rows: np.ndarray,
    heldout_labels: np.ndarray,
    history: dict[str, list[float]] | None,
    plots: bool = True,
    *,
    train_rows: np.ndarray | None = None,
    train_labels: np.ndarray | None = None,
    accept_weak: bool = False,
) -> Evaluation:
    """Write report.json (and the plots, unless `plots` is False) into the version directory; return metrics and
    calibration. Privacy and utility need the training rows (None without them); `accept_weak` only marks a
    refused model as published by override in the `quality_gate` record (refusing is the caller's decision)."""
    started = time.perf_counter()
    schema = model.manifest.schema
    directory = model.directory
    synthetic = served_rows(model.sample(heldout_labels, seed=EVALUATION_SEED), schema)
    metrics = sample_metrics(heldout_rows, heldout_labels, synthetic, schema, train_rows, train_labels)
    metrics["utility"] = (
        utility_metrics(model, train_rows, train_labels, heldout_rows, heldout_labels)
        if train_rows is not None and train_labels is not None and len(train_rows)
        else None
    )
    calibration = None
    if "log_prob" in model.manifest.graphs:
        scores = model.scores(heldout_rows, seed=0)
        calibration = calibrate(scores)
        metrics["heldout_nll"] = float(-scores.log_density.astype(np.float64).mean())
        if schema.label is not None:
            metrics["generative_accuracy"] = float((scores.posteriors.argmax(1) == heldout_labels).mean())
    diff = np.abs(correlation(heldout_rows) - correlation(synthetic))
    metrics["mean_correlation_difference"] = (
        float(diff[np.triu_indices(schema.width, 1)].mean()) if schema.width > 1 else 0.0
    )
    files: list[str] = []
    if plots:
        files += ["marginals.png", "correlation_difference.png"]
        plot_marginals(heldout_rows, synthetic, schema, directory / "marginals.png")
        plot_correlation_difference(diff, schema, directory / "correlation_difference.png")
    if plots and history:
        plot_losses(history, directory / "loss_curves.png")
        files.append("loss_curves.png")
    if plots and schema.image_shape is not None and len(schema.image_shape) == 2:
        plot_image_grid(model, schema, directory / "samples.png")
        files.append("samples.png")
    metrics["quality_gate"] = verdict(judge(metrics), accept_weak)
    metrics["evaluation_seconds"] = round(time.perf_counter() - started, 3)
    report = {"metrics": metrics, "history": history or {}}
    if calibration is not None:
        report["calibration"] = {
            "fpr": list(calibration.fpr),
            "log_prob_quantiles": list(calibration.log_prob_quantiles),
            "anomaly_score_quantiles": (
                None if calibration.anomaly_score_quantiles is None else list(calibration.anomaly_score_quantiles)
            ),
        }
    (directory / REPORT_FILE).write_text(json.dumps(report, indent=1) + "\n")
    return Evaluation(metrics, calibration, (REPORT_FILE, *files))


def evaluate_prepared(
    model: ExportedModel,
    prepared: Prepared,
    history: dict[str, list[float]] | None,
    plots: bool,
    accept_weak: bool = False,
) -> Evaluation:
    """`evaluate_version` on a prepared table's held-out rows, with its training rows for privacy and utility."""
    heldout, train = prepared.split.heldout, prepared.split.train
    return evaluate_version(
        model,
        prepared.rows[heldout],
        prepared.labels[heldout],
        history,
        plots=plots,
        train_rows=prepared.rows[train],
        train_labels=prepared.labels[train],
        accept_weak=accept_weak,
    )
