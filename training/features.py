"""Rows as every evaluation metric reads them, and the settings the metrics share.

Generated rows are judged as served: `served_rows` finishes them as the server does (clipped to the training
ranges, rounded) before any metric.
"""

from __future__ import annotations

import numpy as np

from synthserve.contract import MISSING_CODE, Schema, finish_rows

__all__ = ["EVALUATION_SEED", "MAX_PAIRED_ROWS", "category_codes", "design_matrix", "onehot", "served_rows"]

EVALUATION_SEED = 7  # synthetic rows for the report; any fixed seed keeps reports reproducible
MAX_PAIRED_ROWS = 2_000  # DCR query rows (each kind) and TSTR / TRTR training rows


def served_rows(rows: np.ndarray, schema: Schema) -> np.ndarray:
    """Graph rows -> the values the server sends, as float32 [N, D] with NaN for a gap (a category's -1 too).

    float32 like the real rows they are compared with (`training.data.encode_rows`): a served 0.22 (float64) must
    equal a real 0.22, which float32 holds as 0.2199999988, or every metric would split that point mass in two.
    """
    served = np.stack([values.astype(np.float32) for values in finish_rows(schema, rows)], axis=1)
    for j, col in enumerate(schema.columns):
        if col.kind == "categorical":
            served[served[:, j] == MISSING_CODE, j] = np.nan
    return served


def onehot(codes: np.ndarray, n_categories: int) -> np.ndarray:
    """Category codes [N] -> one-hot [N, n_categories + 1], the last slot standing for a gap."""
    return np.eye(n_categories + 1)[category_codes(codes, n_categories)]


def design_matrix(
    rows: np.ndarray,
    labels: np.ndarray | None,
    schema: Schema,
    standardize: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Numeric design matrix: categories one-hot with a last indicator for a gap, the label one-hot (unless
    `labels` is None), scalar columns as they are (NaN for a gap: classifiers handle gaps) or, with `standardize`
    = (center, scale) per column, standardized with a gap as 0 plus a gap indicator (for distances)."""
    parts = []
    for j, col in enumerate(schema.columns):
        if col.kind == "categorical":
            assert col.categories is not None
            parts.append(onehot(rows[:, j], len(col.categories)))
        elif standardize is None:
            parts.append(rows[:, j : j + 1])
        else:
            center, scale = standardize
            gap = np.isnan(rows[:, j])
            parts.append(np.where(gap, 0.0, (rows[:, j] - center[j]) / scale[j])[:, None])
            parts.append(gap[:, None].astype(np.float64))
    if labels is not None:
        parts.append(np.eye(schema.n_classes)[labels])
    return np.concatenate(parts, axis=1)


def category_codes(values: np.ndarray, n_categories: int) -> np.ndarray:
    """Category codes [N] as ints in [0, n_categories], n_categories standing for a gap."""
    codes = np.clip(np.nan_to_num(values, nan=0.0), 0, n_categories - 1).astype(int)
    return np.where(np.isnan(values), n_categories, codes)
