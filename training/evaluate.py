"""Evaluation of an exported version on held-out rows: fidelity metrics, calibration, report.json and plots.

Everything runs on the exported ONNX graphs (what the server will serve), with noise drawn by the
contract's rule. C2ST: a gradient-boosted classifier tells synthetic from held-out real rows (label
included as a feature); 0.5 is indistinguishable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from scipy.stats import ks_2samp
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.model_selection import StratifiedKFold, cross_val_score
from threadpoolctl import threadpool_limits

from synthserve.contract import Calibration, Schema
from training.exported import ExportedModel

__all__ = ["CALIBRATION_FPR", "EVALUATION_SEED", "PLOT_DPI", "Evaluation", "calibrate", "evaluate_version"]

CALIBRATION_FPR = (0.001, 0.005, 0.01, 0.05, 0.1, 0.2)
EVALUATION_SEED = 7  # synthetic rows for the report; any fixed seed keeps reports reproducible
PLOT_DPI = 80
MAX_MARGINAL_PLOTS = 16
REPORT_FILE = "report.json"


@dataclass(frozen=True)
class Evaluation:
    metrics: dict[str, Any]
    calibration: Calibration | None
    files: tuple[str, ...]  # report and plot files written


def calibrate(model: ExportedModel, rows: np.ndarray) -> tuple[Calibration, np.ndarray]:
    """Held-out log-density quantiles at CALIBRATION_FPR, scored with seed 0 exactly as the server scores."""
    log_prob, _, _ = model.log_prob(rows, seed=0)
    quantiles = np.quantile(log_prob.astype(np.float64), CALIBRATION_FPR)
    return Calibration(CALIBRATION_FPR, tuple(float(q) for q in quantiles), len(rows)), log_prob


def _features(rows: np.ndarray, labels: np.ndarray, schema: Schema) -> np.ndarray:
    """Numeric design matrix: scalar columns as they are, categories one-hot, the label one-hot."""
    parts = []
    for j, col in enumerate(schema.columns):
        if col.kind == "categorical":
            assert col.categories is not None
            parts.append(np.eye(len(col.categories))[np.clip(rows[:, j].astype(int), 0, len(col.categories) - 1)])
        else:
            parts.append(rows[:, j : j + 1])
    parts.append(np.eye(schema.n_classes)[labels])
    return np.concatenate(parts, axis=1)


def c2st_auc(real: np.ndarray, synthetic: np.ndarray, seed: int = 0) -> float:
    """Cross-validated ROC AUC of a classifier separating synthetic from real rows."""
    x = np.concatenate([real, synthetic])
    y = np.concatenate([np.zeros(len(real)), np.ones(len(synthetic))])
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    clf = HistGradientBoostingClassifier(max_iter=100, learning_rate=0.1, random_state=seed)
    # One OpenMP thread: on a shared machine spinning worker threads make this far slower, not faster.
    with threadpool_limits(limits=1):
        return float(np.mean(cross_val_score(clf, x, y, cv=folds, scoring="roc_auc")))


def _column_distances(real: np.ndarray, synthetic: np.ndarray, schema: Schema) -> dict[str, dict[str, float]]:
    """KS statistic for scalar columns, total variation distance for categorical ones."""
    out: dict[str, dict[str, float]] = {}
    for j, col in enumerate(schema.columns):
        if col.kind == "categorical":
            assert col.categories is not None
            k = len(col.categories)
            p = np.bincount(real[:, j].astype(int), minlength=k) / len(real)
            q = np.bincount(np.clip(synthetic[:, j].astype(int), 0, k - 1), minlength=k) / len(synthetic)
            out[col.name] = {"tv": float(0.5 * np.abs(p - q).sum())}
        else:
            out[col.name] = {"ks": float(ks_2samp(real[:, j], synthetic[:, j]).statistic)}
    return out


def _plot_losses(history: dict[str, list[float]], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5, 3))
    for key in ("train_loss", "validation_loss"):
        if history.get(key):
            ax.plot(history[key], label=key.replace("_", " "))
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (nats / row)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=PLOT_DPI)
    plt.close(fig)


def _plot_marginals(real: np.ndarray, synthetic: np.ndarray, schema: Schema, path: Path) -> None:
    columns = list(range(min(schema.width, MAX_MARGINAL_PLOTS)))
    n_cols = 4
    n_rows = (len(columns) + n_cols - 1) // n_cols
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(10, 2.2 * n_rows), squeeze=False)
    for ax, j in zip(axes.flat, columns):
        col = schema.columns[j]
        if col.kind == "categorical":
            assert col.categories is not None
            k = len(col.categories)
            width = 0.4
            ax.bar(
                np.arange(k) - width / 2,
                np.bincount(real[:, j].astype(int), minlength=k) / len(real),
                width,
                label="real",
            )
            ax.bar(
                np.arange(k) + width / 2,
                np.bincount(synthetic[:, j].astype(int), minlength=k) / len(synthetic),
                width,
                label="synthetic",
            )
            ax.set_xticks(np.arange(k), [str(c)[:6] for c in col.categories], fontsize=6)
        else:
            bins = np.histogram_bin_edges(np.concatenate([real[:, j], synthetic[:, j]]), bins=30)
            ax.hist(real[:, j], bins=bins, alpha=0.5, density=True, label="real")
            ax.hist(synthetic[:, j], bins=bins, alpha=0.5, density=True, label="synthetic")
        ax.set_title(col.name[:24], fontsize=7)
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[len(columns) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=PLOT_DPI)
    plt.close(fig)


def _correlation(x: np.ndarray) -> np.ndarray:
    std = x.std(0)
    safe = np.where(std > 0, std, 1.0)
    z = (x - x.mean(0)) / safe
    corr = z.T @ z / len(x)
    corr[std == 0, :] = 0.0
    corr[:, std == 0] = 0.0
    return corr


def _plot_correlation_difference(diff: np.ndarray, schema: Schema, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(4.5, 4))
    image = ax.imshow(diff, vmin=0, vmax=1, cmap="magma")
    ax.set_title("|corr(real) - corr(synthetic)|", fontsize=8)
    if schema.width <= 16:
        names = [c.name[:10] for c in schema.columns]
        ax.set_xticks(range(schema.width), names, rotation=90, fontsize=6)
        ax.set_yticks(range(schema.width), names, fontsize=6)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=PLOT_DPI)
    plt.close(fig)


def _plot_image_grid(model: ExportedModel, schema: Schema, path: Path, per_class: int = 8) -> None:
    assert schema.image_shape is not None
    n_classes = schema.n_classes
    labels = np.repeat(np.arange(n_classes), per_class)
    images = model.sample(labels, seed=EVALUATION_SEED).reshape(-1, *schema.image_shape)
    height, width = schema.image_shape
    fig, axes = plt.subplots(
        n_classes,
        per_class,
        figsize=(per_class * 0.6, n_classes * 0.6 * height / width),
        squeeze=False,
        gridspec_kw={"wspace": 0.05, "hspace": 0.05, "left": 0.02, "right": 0.98, "top": 0.98, "bottom": 0.02},
    )
    for ax, image in zip(axes.flat, images):
        ax.imshow(image, cmap="gray_r")
        ax.axis("off")
    fig.savefig(path, dpi=PLOT_DPI)
    plt.close(fig)


def evaluate_version(
    model: ExportedModel,
    heldout_rows: np.ndarray,
    heldout_labels: np.ndarray,
    history: dict[str, list[float]] | None,
    plots: bool = True,
) -> Evaluation:
    """Write report.json (and the plots, unless `plots` is False) into the version directory; return metrics and
    calibration."""
    schema = model.manifest.schema
    directory = model.directory
    synthetic = model.sample(heldout_labels, seed=EVALUATION_SEED)
    distances = _column_distances(heldout_rows, synthetic, schema)
    ks = [v["ks"] for v in distances.values() if "ks" in v]
    tv = [v["tv"] for v in distances.values() if "tv" in v]
    metrics: dict[str, Any] = {
        "n_heldout": len(heldout_rows),
        "c2st_auc": c2st_auc(
            _features(heldout_rows, heldout_labels, schema), _features(synthetic, heldout_labels, schema)
        ),
        "mean_ks": float(np.mean(ks)) if ks else None,
        "mean_tv": float(np.mean(tv)) if tv else None,
    }
    calibration = None
    if "log_prob" in model.manifest.graphs:
        calibration, log_prob = calibrate(model, heldout_rows)
        _, _, posterior = model.log_prob(heldout_rows, seed=0)
        metrics["heldout_nll"] = float(-log_prob.astype(np.float64).mean())
        if schema.label is not None:
            metrics["generative_accuracy"] = float((posterior.argmax(1) == heldout_labels).mean())
    diff = np.abs(_correlation(heldout_rows) - _correlation(synthetic))
    metrics["mean_correlation_difference"] = (
        float(diff[np.triu_indices(schema.width, 1)].mean()) if schema.width > 1 else 0.0
    )
    files: list[str] = []
    if plots:
        files += ["marginals.png", "correlation_difference.png"]
        _plot_marginals(heldout_rows, synthetic, schema, directory / "marginals.png")
        _plot_correlation_difference(diff, schema, directory / "correlation_difference.png")
    if plots and history:
        _plot_losses(history, directory / "loss_curves.png")
        files.append("loss_curves.png")
    if plots and schema.image_shape is not None and len(schema.image_shape) == 2:
        _plot_image_grid(model, schema, directory / "samples.png")
        files.append("samples.png")
    report = {"metrics": metrics, "columns": distances, "history": history or {}}
    if calibration is not None:
        report["calibration"] = {
            "fpr": list(calibration.fpr),
            "log_prob_quantiles": list(calibration.log_prob_quantiles),
        }
    (directory / REPORT_FILE).write_text(json.dumps(report, indent=1) + "\n")
    return Evaluation(metrics, calibration, (REPORT_FILE, *files))
