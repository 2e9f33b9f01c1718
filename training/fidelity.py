"""Fidelity: how close synthetic rows of the held-out rows' classes come to the held-out rows.

C2ST: a gradient-boosted classifier tells synthetic from held-out real rows (label included as a feature); 0.5 is
indistinguishable. Per column: KS statistic (scalar columns) or total variation distance (categorical ones).
Collapsed columns: held-out values vary within a class, generated values are one per class. Correlations: of the
columns, gaps at their column's median.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import ks_2samp
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.model_selection import StratifiedKFold, cross_val_score
from threadpoolctl import threadpool_limits

from synthserve.contract import Schema
from training.features import category_codes

__all__ = ["c2st_auc", "collapsed_columns", "column_distances", "correlation"]


C2ST_FOLDS = 5


def c2st_auc(real: np.ndarray, synthetic: np.ndarray, seed: int = 0) -> float:
    """Cross-validated ROC AUC of a classifier separating synthetic from real rows: 5 folds, fewer where a side has
    fewer rows (the held-out part of a table of the minimum 20 rows has 4), so every fold tests both sides. With
    under about 25 rows a side the classifier's leaves (20 rows) allow no split and the AUC is 0.5: no evidence."""
    splits = min(C2ST_FOLDS, len(real), len(synthetic))
    if splits < 2:
        raise ValueError(f"C2ST needs at least 2 real and 2 synthetic rows, got {len(real)} and {len(synthetic)}")
    x = np.concatenate([real, synthetic])
    y = np.concatenate([np.zeros(len(real)), np.ones(len(synthetic))])
    folds = StratifiedKFold(n_splits=splits, shuffle=True, random_state=seed)
    clf = HistGradientBoostingClassifier(max_iter=100, learning_rate=0.1, random_state=seed)
    # One OpenMP thread: on a shared machine spinning worker threads make this far slower, not faster.
    with threadpool_limits(limits=1):
        return float(np.mean(cross_val_score(clf, x, y, cv=folds, scoring="roc_auc")))


def column_distances(real: np.ndarray, synthetic: np.ndarray, schema: Schema) -> dict[str, dict[str, float]]:
    """KS statistic for scalar columns, total variation distance for categorical ones."""
    out: dict[str, dict[str, float]] = {}
    for j, col in enumerate(schema.columns):
        if col.kind == "categorical":
            assert col.categories is not None
            k = len(col.categories)
            p = np.bincount(category_codes(real[:, j], k), minlength=k + 1) / len(real)
            q = np.bincount(category_codes(synthetic[:, j], k), minlength=k + 1) / len(synthetic)
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


def collapsed_columns(
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


def correlation(x: np.ndarray) -> np.ndarray:
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
