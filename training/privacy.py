"""Privacy: distance to the closest training record (DCR) of synthetic rows against that of held-out real rows.

Held-out rows are rows the model never saw: a model that reproduces its training rows puts its rows nearer to them
than fresh real rows are. Distances are Euclidean over scalar columns standardized by the training rows (a gap: 0
plus a gap indicator), categories one-hot (a gap: its own slot) and the class one-hot; medians and 5th
percentiles, and the share of rows that equal a training row in every column and the class.
The matrix product |q|^2 - 2 q.r + |r|^2 only ranks the reference rows: it cancels near a repeated row (up to a few
1e-6 where the distance is 0, which the gate's "every generated row repeats one" rule reads as no repeat), so the
few best-ranked rows are measured term by term, as the `log_prob` graphs do (training/neighbors.py).
"""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits

from synthserve.contract import Schema
from training.features import EVALUATION_SEED, MAX_PAIRED_ROWS, design_matrix

__all__ = ["MAX_DCR_REFERENCE_ROWS", "closest_distances", "privacy_metrics"]

MAX_DCR_REFERENCE_ROWS = 20_000  # training rows searched for the closest one (exact copies: all of them)
RANKED_CANDIDATES = 4  # best-ranked reference rows per query measured term by term
QUERY_CHUNK = 256  # query rows per matrix product: 256 x 20,000 float64 is 41 MB


def closest_distances(queries: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """[Q] Euclidean distance of each query row to its closest reference row: exactly 0 for a repeat."""
    reference_norms = np.einsum("ij,ij->i", reference, reference)
    keep = min(RANKED_CANDIDATES, len(reference))
    out = np.empty(len(queries))
    for start in range(0, len(queries), QUERY_CHUNK):
        chunk = queries[start : start + QUERY_CHUNK]
        ranked = reference_norms[None, :] - 2.0 * (chunk @ reference.T)  # |q|^2 is the same along a row
        best = np.argpartition(ranked, keep - 1, axis=1)[:, :keep]
        gaps = chunk[:, None, :] - reference[best]
        out[start : start + len(chunk)] = np.sqrt(np.einsum("qkd,qkd->qk", gaps, gaps).min(axis=1))
    return out


def _row_keys(rows: np.ndarray, labels: np.ndarray) -> list[bytes]:
    """One key per row: its values as float32 (as the training rows hold them) and its class; equal keys are equal
    rows (gaps equal gaps, -0.0 equals 0.0)."""
    values = np.where(np.isnan(rows), np.inf, rows).astype(np.float32) + np.float32(0.0)
    keyed = np.concatenate([values.view(np.int32), labels.astype(np.int32)[:, None]], axis=1)
    return [row.tobytes() for row in np.ascontiguousarray(keyed)]


def privacy_metrics(
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
    reference_space = design_matrix(train_rows[reference], train_labels[reference], schema, (center, scale))
    out: dict[str, float | int] = {}
    for kind, rows in (("synthetic", synthetic), ("heldout", heldout_rows)):
        # One BLAS thread: see c2st_auc.
        with threadpool_limits(limits=1):
            dcr = closest_distances(
                design_matrix(rows[queries], labels[queries], schema, (center, scale)), reference_space
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
