"""Evaluation of an exported version: fidelity, privacy and utility metrics, calibration, report.json and plots.

Everything runs on the exported ONNX graphs (what the server will serve), with noise drawn by the contract's
rule, and judges generated rows as served: `finish_rows` clips them to the training ranges and rounds them
before any metric. All figures go into report.json and the manifest's `metrics` (hence `GetModel`):
- fidelity (`c2st_auc`, `column_fidelity`, `mean_ks`, `mean_tv`, `mean_correlation_difference`): synthetic rows
  of the held-out rows' classes against the held-out rows. C2ST: a gradient-boosted classifier tells synthetic
  from held-out real rows (label included as a feature); 0.5 is indistinguishable. `collapsed_columns`: columns
  whose held-out values vary within a class but whose generated values are one per class (of
  `varying_columns`).
- privacy (`privacy`): distance to the closest training record (DCR) of each synthetic row against the same for
  each held-out real row, which the model never saw: a model that reproduces its training rows puts its rows
  nearer to them than fresh real rows are. Distances are Euclidean over scalar columns standardized by the
  training rows (a gap: 0 plus a gap indicator), categories one-hot (a gap: its own slot) and the class one-hot;
  medians and 5th percentiles, and the share of rows that equal a training row in every column and the class.
- utility (`utility`, labelled tables): train on synthetic, test on real (TSTR) against train on real (TRTR).
  The same classifier learns the class from synthetic rows drawn for a sample of the training rows' classes,
  then from those training rows, and is scored on the held-out rows: ROC AUC, one-vs-rest macro average over
  the classes present.
- `quality_gate`: `training.gate.judge`'s verdict on these figures.
DCR and TSTR use at most MAX_PAIRED_ROWS query / training rows, so they take a few seconds on any table.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from scipy.stats import ks_2samp
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import pairwise_distances_argmin_min, roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_score
from threadpoolctl import threadpool_limits

from synthserve.contract import MISSING_CODE, Calibration, Schema, finish_rows
from training.exported import ExportedModel
from training.gate import judge, verdict

__all__ = [
    "CALIBRATION_FPR",
    "EVALUATION_SEED",
    "MAX_PAIRED_ROWS",
    "PLOT_DPI",
    "Evaluation",
    "calibrate",
    "evaluate_version",
    "sample_metrics",
]

CALIBRATION_FPR = (0.001, 0.005, 0.01, 0.05, 0.1, 0.2)
EVALUATION_SEED = 7  # synthetic rows for the report; any fixed seed keeps reports reproducible
PLOT_DPI = 80
MAX_MARGINAL_PLOTS = 16
MAX_PAIRED_ROWS = 2_000  # DCR query rows (each kind) and TSTR / TRTR training rows
MAX_DCR_REFERENCE_ROWS = 20_000  # training rows searched for the closest one (exact copies: all of them)
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


def _served(rows: np.ndarray, schema: Schema) -> np.ndarray:
    """Graph rows -> the values the server sends, as float32 [N, D] with NaN for a gap (a category's -1 too).

    float32 like the real rows they are compared with (`training.data.encode_rows`): a served 0.22 (float64) must
    equal a real 0.22, which float32 holds as 0.2199999988, or every metric would split that point mass in two.
    """
    served = np.stack([values.astype(np.float32) for values in finish_rows(schema, rows)], axis=1)
    for j, col in enumerate(schema.columns):
        if col.kind == "categorical":
            served[served[:, j] == MISSING_CODE, j] = np.nan
    return served


def _onehot(codes: np.ndarray, n_categories: int) -> np.ndarray:
    """Category codes [N] -> one-hot [N, n_categories + 1], the last slot standing for a gap."""
    return np.eye(n_categories + 1)[_codes(codes, n_categories)]


def _features(rows: np.ndarray, labels: np.ndarray | None, schema: Schema) -> np.ndarray:
    """Numeric design matrix: scalar columns as they are (NaN for a gap: the classifier handles gaps), categories
    one-hot with a last indicator for a gap, the label one-hot (unless `labels` is None)."""
    parts = []
    for j, col in enumerate(schema.columns):
        if col.kind == "categorical":
            assert col.categories is not None
            parts.append(_onehot(rows[:, j], len(col.categories)))
        else:
            parts.append(rows[:, j : j + 1])
    if labels is not None:
        parts.append(np.eye(schema.n_classes)[labels])
    return np.concatenate(parts, axis=1)


def _codes(values: np.ndarray, n_categories: int) -> np.ndarray:
    """Category codes [N] as ints in [0, n_categories], n_categories standing for a gap."""
    codes = np.clip(np.nan_to_num(values, nan=0.0), 0, n_categories - 1).astype(int)
    return np.where(np.isnan(values), n_categories, codes)


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
            p = np.bincount(_codes(real[:, j], k), minlength=k + 1) / len(real)
            q = np.bincount(_codes(synthetic[:, j], k), minlength=k + 1) / len(synthetic)
            out[col.name] = {"tv": float(0.5 * np.abs(p - q).sum())}
        else:
            present_real, present_synthetic = real[~np.isnan(real[:, j]), j], synthetic[~np.isnan(synthetic[:, j]), j]
            ks = (
                # The statistic only: the asymptotic p-value spares the exact one's cost and warnings.
                ks_2samp(present_real, present_synthetic, method="asymp").statistic
                if len(present_real) and len(present_synthetic)
                else 1.0
            )
            out[col.name] = {"ks": float(ks)}
        if col.nullable:
            out[col.name]["missing_rate_real"] = float(np.isnan(real[:, j]).mean())
            out[col.name]["missing_rate_synthetic"] = float(np.isnan(synthetic[:, j]).mean())
    return out


def _distinct(values: np.ndarray) -> int:
    """Distinct values, a gap (NaN) counting as one."""
    return len(np.unique(np.where(np.isnan(values), np.inf, values)))


def _collapsed_columns(
    real: np.ndarray, synthetic: np.ndarray, labels: np.ndarray, schema: Schema
) -> tuple[list[str], int]:
    """Columns whose held-out values vary within some class but whose generated values (drawn for the same
    classes `labels`) are one per class, and how many columns vary within some class."""
    classes = np.unique(labels)
    collapsed, varying = [], 0
    for j, col in enumerate(schema.columns):
        if all(_distinct(real[labels == c, j]) <= 1 for c in classes):
            continue
        varying += 1
        if all(_distinct(synthetic[labels == c, j]) <= 1 for c in classes):
            collapsed.append(col.name)
    return collapsed, varying


def _distance_space(
    rows: np.ndarray, labels: np.ndarray, schema: Schema, center: np.ndarray, scale: np.ndarray
) -> np.ndarray:
    """Rows for DCR: scalar columns standardized (a gap: 0 and a gap indicator), categories one-hot with a slot
    for a gap, the class one-hot."""
    parts = []
    for j, col in enumerate(schema.columns):
        if col.kind == "categorical":
            assert col.categories is not None
            parts.append(_onehot(rows[:, j], len(col.categories)))
        else:
            gap = np.isnan(rows[:, j])
            parts.append(np.where(gap, 0.0, (rows[:, j] - center[j]) / scale[j])[:, None])
            parts.append(gap[:, None].astype(np.float64))
    parts.append(np.eye(schema.n_classes)[labels])
    return np.concatenate(parts, axis=1)


def _row_keys(rows: np.ndarray, labels: np.ndarray) -> list[bytes]:
    """One key per row: its values as float32 (as the training rows hold them) and its class; equal keys are equal
    rows (gaps equal gaps, -0.0 equals 0.0)."""
    values = np.where(np.isnan(rows), np.inf, rows).astype(np.float32) + np.float32(0.0)
    keyed = np.concatenate([values.view(np.int32), labels.astype(np.int32)[:, None]], axis=1)
    return [row.tobytes() for row in np.ascontiguousarray(keyed)]


def _privacy(
    train_rows: np.ndarray,
    train_labels: np.ndarray,
    heldout_rows: np.ndarray,
    synthetic: np.ndarray,
    labels: np.ndarray,
    schema: Schema,
) -> dict[str, float | int]:
    """DCR of synthetic rows against held-out real rows of the same classes `labels`; exact-copy shares."""
    rng = np.random.default_rng(EVALUATION_SEED)
    queries = np.sort(rng.choice(len(heldout_rows), min(len(heldout_rows), MAX_PAIRED_ROWS), replace=False))
    reference = np.sort(rng.choice(len(train_rows), min(len(train_rows), MAX_DCR_REFERENCE_ROWS), replace=False))
    with np.errstate(all="ignore"):  # an all-gap column: NaN center, replaced below
        center = np.nan_to_num(np.nanmean(train_rows, axis=0))
        spread = np.nan_to_num(np.nanstd(train_rows, axis=0))
    scale = np.where(spread > 0, spread, 1.0)
    known = set(_row_keys(train_rows, train_labels))
    reference_space = _distance_space(train_rows[reference], train_labels[reference], schema, center, scale)
    out: dict[str, float | int] = {}
    for kind, rows in (("synthetic", synthetic), ("heldout", heldout_rows)):
        # One BLAS thread: see c2st_auc.
        with threadpool_limits(limits=1):
            _, dcr = pairwise_distances_argmin_min(
                _distance_space(rows[queries], labels[queries], schema, center, scale), reference_space
            )
        out[f"dcr_median_{kind}"] = float(np.median(dcr))
        out[f"dcr_p05_{kind}"] = float(np.quantile(dcr, 0.05))
        out[f"exact_copies_{kind}"] = float(np.mean([key in known for key in _row_keys(rows, labels)]))
    # On a table whose rows come from a small finite set (every column discrete), a faithful model repeats
    # training rows as often as the training rows cover that set, and unseen held-out rows just as often per row:
    # what tells memorizing from it is whether generated rows also reach the rows the model never saw.
    unseen = set(_row_keys(heldout_rows, labels))
    out["exact_matches_heldout_synthetic"] = float(np.mean([key in unseen for key in _row_keys(synthetic, labels)]))
    out["distinct_rows_train"] = len(known)
    out["distinct_rows_heldout"] = len(unseen)
    out["n_query_rows"] = len(queries)
    out["n_reference_rows"] = len(reference)
    return out


def _classifier_auc(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, n_classes: int
) -> float:
    """ROC AUC on the test rows of a classifier fitted on the training rows: one-vs-rest, macro over the classes
    present in the test rows (for two classes, the plain AUC)."""
    # Smaller than C2ST's: it is fitted once per class per round, twice, and digits has 10 classes.
    clf = HistGradientBoostingClassifier(max_iter=50, max_leaf_nodes=15, random_state=0)
    with threadpool_limits(limits=1):
        clf.fit(x_train, y_train)
        proba = clf.predict_proba(x_test)
    scores = np.zeros((len(x_test), n_classes))
    scores[:, clf.classes_] = proba
    return float(np.mean([roc_auc_score(y_test == c, scores[:, c]) for c in np.unique(y_test)]))


def _utility(
    model: ExportedModel,
    train_rows: np.ndarray,
    train_labels: np.ndarray,
    heldout_rows: np.ndarray,
    heldout_labels: np.ndarray,
) -> dict[str, float | int] | None:
    """TSTR against TRTR (module docstring); None for an unlabelled table or a part with a single class."""
    schema = model.manifest.schema
    rng = np.random.default_rng(EVALUATION_SEED)
    index = np.sort(rng.choice(len(train_rows), min(len(train_rows), MAX_PAIRED_ROWS), replace=False))
    labels = train_labels[index]
    if schema.label is None or len(np.unique(labels)) < 2 or len(np.unique(heldout_labels)) < 2:
        return None
    synthetic = _served(model.sample(labels, seed=EVALUATION_SEED), schema)
    test = _features(heldout_rows, None, schema)

    def auc(rows: np.ndarray) -> float:
        return _classifier_auc(_features(rows, None, schema), labels, test, heldout_labels, schema.n_classes)

    return {"tstr_auc": auc(synthetic), "trtr_auc": auc(train_rows[index]), "n_train_rows": len(index)}


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
    distances = _column_distances(heldout_rows, synthetic, schema)
    ks = [v["ks"] for v in distances.values() if "ks" in v]
    tv = [v["tv"] for v in distances.values() if "tv" in v]
    collapsed, varying = _collapsed_columns(heldout_rows, synthetic, heldout_labels, schema)
    privacy = None
    if train_rows is not None and train_labels is not None and len(train_rows):
        privacy = _privacy(train_rows, train_labels, heldout_rows, synthetic, heldout_labels, schema)
    return {
        "n_heldout": len(heldout_rows),
        "c2st_auc": c2st_auc(
            _features(heldout_rows, heldout_labels, schema), _features(synthetic, heldout_labels, schema)
        ),
        "mean_ks": float(np.mean(ks)) if ks else None,
        "mean_tv": float(np.mean(tv)) if tv else None,
        "column_fidelity": distances,
        "collapsed_columns": collapsed,
        "varying_columns": varying,
        "privacy": privacy,
    }


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
            k = len(col.categories) + 1  # the last bar: gaps
            width = 0.4
            ax.bar(
                np.arange(k) - width / 2,
                np.bincount(_codes(real[:, j], k - 1), minlength=k) / len(real),
                width,
                label="real",
            )
            ax.bar(
                np.arange(k) + width / 2,
                np.bincount(_codes(synthetic[:, j], k - 1), minlength=k) / len(synthetic),
                width,
                label="synthetic",
            )
            ax.set_xticks(np.arange(k), [str(c)[:6] for c in (*col.categories, "(gap)")], fontsize=6)
        else:
            real_j, synthetic_j = real[~np.isnan(real[:, j]), j], synthetic[~np.isnan(synthetic[:, j]), j]
            bins = np.histogram_bin_edges(np.concatenate([real_j, synthetic_j]), bins=30)
            ax.hist(real_j, bins=bins, alpha=0.5, density=True, label="real")
            ax.hist(synthetic_j, bins=bins, alpha=0.5, density=True, label="synthetic")
        ax.set_title(col.name[:24], fontsize=7)
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[len(columns) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=PLOT_DPI)
    plt.close(fig)


def _correlation(x: np.ndarray) -> np.ndarray:
    gaps = np.isnan(x)
    if gaps.any():  # gaps count at their column's median
        x = np.where(gaps, np.nanmedian(np.where(gaps.all(0), 0.0, x), axis=0), x)
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
    synthetic = _served(model.sample(heldout_labels, seed=EVALUATION_SEED), schema)
    metrics = sample_metrics(heldout_rows, heldout_labels, synthetic, schema, train_rows, train_labels)
    metrics["utility"] = (
        _utility(model, train_rows, train_labels, heldout_rows, heldout_labels)
        if train_rows is not None and train_labels is not None and len(train_rows)
        else None
    )
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
    metrics["quality_gate"] = verdict(judge(metrics), accept_weak)
    metrics["evaluation_seconds"] = round(time.perf_counter() - started, 3)
    report = {"metrics": metrics, "history": history or {}}
    if calibration is not None:
        report["calibration"] = {
            "fpr": list(calibration.fpr),
            "log_prob_quantiles": list(calibration.log_prob_quantiles),
        }
    (directory / REPORT_FILE).write_text(json.dumps(report, indent=1) + "\n")
    return Evaluation(metrics, calibration, (REPORT_FILE, *files))
