"""Training rows a `log_prob` graph holds, and the distances to them that its extra outputs are made of.

A trained density model keeps up to MAX_REFERENCE_ROWS rows of its training split, grouped by class. From them:
- the mean distance to the k nearest rows of any class (the anomaly score's second term, training/anomaly.py);
- the distance to the nearest row of each class, from which `class_margin(x, c) = log d(x, not c) - log d(x, c)`
  is computed: how much nearer x lies to class c's training rows than to any other class's. Best-of-k sampling
  keeps, per output row, the candidate with the highest margin for its class (synthserve.contract.best_candidates);
  docs/quality.md ("Balance by class margin") has the measurement that made it the selection rule.
Numeric columns (continuous, integer, pixels) count in units of their standard deviation over the reference rows
(a gap counts as the mean); a categorical column adds 1 to the squared distance when the codes differ.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from synthserve.contract import Schema

__all__ = ["MAX_REFERENCE_ROWS", "NeighborParams", "Neighbors", "fit_neighbors"]

MAX_REFERENCE_ROWS = 4096  # the graph holds them; a batch of B rows takes B x this many distances
ONEHOT_MAX_LEVELS = 64  # categories of at most this many levels are one-hot inside the matrix product
# Added to both distances of the margin: a candidate that repeats a training row of one class only (frequent in
# all-categorical tables) gets a large, finite margin; one that repeats rows of two classes gets 0.
MARGIN_EPSILON = 1e-3
# The matrix product ranks the rows of a class within its rounding: rows nearer each other than that may swap. This
# many spare candidates beyond the k asked for are measured term by term, which puts such rows back in order.
SPARE_CANDIDATES = 3
ABSENT_CLASS_DISTANCE = 1e12  # squared: a class with no training rows (all in the validation split) is this far


@dataclass(frozen=True)
class NeighborParams:
    """The reference rows and how distances are measured: plain arrays, so a checkpoint stores them as tensors."""

    reference: np.ndarray  # [R, D] float32 rows in graph units (codes for categorical columns), grouped by class
    class_counts: np.ndarray  # [C] int: how many of the reference rows, in order, belong to each class
    center: np.ndarray  # [D] subtracted from numeric columns (0 for categorical ones)
    scale: np.ndarray  # [D] numeric columns are divided by it (1 for categorical ones)
    categorical: np.ndarray  # [D] bool: compared by code
    levels: np.ndarray  # [D] int: the number of categories of a categorical column (0 for numeric ones)

    def to_state(self) -> dict[str, Tensor]:
        return {k: torch.as_tensor(v) for k, v in self.__dict__.items()}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> NeighborParams:
        return cls(**{k: v.numpy() if isinstance(v, Tensor) else np.asarray(v) for k, v in state.items()})


class Neighbors(nn.Module):
    """rows [B, D] (graph units) -> distances to the reference rows; exported inside the `log_prob` graph.

    Distances are computed class by class, each class's rows a block of its own (one matrix product, then its k
    nearest), so that the nearest row of each class (the margin) comes from the same pass as the k nearest of any
    class (the anomaly score): one pass over the B x R distances in all, with no copy of them.
    A category of at most ONEHOT_MAX_LEVELS levels joins the numeric columns in the matrix product, as its one-hot
    code: mismatch = 1 - e(x) . e(r). Columns of more levels are compared code by code (one pass over [B, R] each)
    so that the graph does not hold R x levels numbers.
    """

    center: Tensor
    scale: Tensor
    onehot_levels: Tensor

    def __init__(self, params: NeighborParams) -> None:
        super().__init__()
        self.params = params
        self.numeric = [int(i) for i in np.flatnonzero(~params.categorical)]
        onehot = params.categorical & (params.levels <= ONEHOT_MAX_LEVELS)
        self.onehot = [int(i) for i in np.flatnonzero(onehot)]
        self.compared = [int(i) for i in np.flatnonzero(params.categorical & ~onehot)]
        ends = np.cumsum(params.class_counts)
        self.class_slices = [(int(e - n), int(e)) for n, e in zip(params.class_counts, ends, strict=True)]
        reference = torch.as_tensor(params.reference, dtype=torch.float32)
        self.register_buffer("center", torch.as_tensor(params.center[self.numeric], dtype=torch.float32))
        self.register_buffer("scale", torch.as_tensor(params.scale[self.numeric], dtype=torch.float32))
        self.register_buffer(
            "onehot_levels", torch.arange(int(params.levels[onehot].max(initial=0)), dtype=torch.float32)
        )
        features = self._features(reference)  # [R, F]
        # partial(x, r) = |x - r|^2 - |x|^2 + (one-hot mismatches) = bias_r + features(x) . weight_r
        numeric_width = len(self.numeric)
        weight = torch.cat([-2.0 * features[:, :numeric_width], -features[:, numeric_width:]], dim=1)
        bias = (features[:, :numeric_width] ** 2).sum(1) + len(self.onehot)
        for c, (start, end) in enumerate(self.class_slices):  # a block per class: no slicing inside the graph
            self.register_buffer(f"weight_{c}", weight[start:end].t().contiguous())
            self.register_buffer(f"bias_{c}", bias[start:end].contiguous())
            self.register_buffer(f"codes_{c}", reference[start:end][:, self.compared].contiguous())

    def product_weights(self) -> list[Tensor]:
        """The matrix product's weights and biases, a pair per class: the reference rows as the graph holds them."""
        return [getattr(self, f"{name}_{c}") for c in range(len(self.class_slices)) for name in ("weight", "bias")]

    @property
    def n_rows(self) -> int:
        return len(self.params.reference)

    def _features(self, rows: Tensor) -> Tensor:
        """Standardized numeric columns (a gap: 0, the mean), then each small category's one-hot code, [N, F]."""
        parts = []
        if self.numeric:
            x = (rows[:, self.numeric] - self.center) / self.scale
            parts.append(torch.where(torch.isnan(x), torch.zeros_like(x), x))
        for column in self.onehot:
            levels = self.onehot_levels[: int(self.params.levels[column])]
            parts.append((rows[:, column : column + 1] == levels).to(rows.dtype))
        return torch.cat(parts, dim=1) if parts else rows[:, :0]

    def _class_partial(self, rows: Tensor, features: Tensor, c: int) -> Tensor:
        """[B, R_c]: the squared distance to each of class c's reference rows, less the row's own |x|^2 (the same
        for every reference row, added to the chosen only)."""
        weight, bias, codes = (getattr(self, f"{name}_{c}") for name in ("weight", "bias", "codes"))
        # Only many-level categories: [B, R_c] of the bias, without shape arithmetic in the graph.
        partial = torch.addmm(bias, features, weight) if features.shape[1] else torch.zeros_like(rows[:, :1]) + bias
        for j, column in enumerate(self.compared):
            partial = partial + (rows[:, column : column + 1] != codes[:, j]).to(partial.dtype)
        return partial

    def _exact(self, rows: Tensor, features: Tensor, c: int, index: Tensor) -> Tensor:
        """[B, K]: the squared distance to class c's reference rows `index` [B, K], term by term. The matrix product's
        |x|^2 - 2 x.r + |r|^2 ranks the rows but loses to cancellation what it returns: near a repeated row it is a
        difference of large terms, off by their rounding, and the distance (its square root) by the root of that."""
        width = len(self.numeric)
        # [B, K, F]: -2 r for numeric features, -e(r) for one-hot. Gathered along the [F, R_c] buffer's own axis and
        # transposed after (indexing it as weight[:, index] exports as a transposed buffer, which the exporter folds
        # into a second copy of the rows).
        weight = getattr(self, f"weight_{c}")
        chosen = weight.index_select(1, index.reshape(-1)).reshape(-1, *index.shape).permute(1, 2, 0)
        squared = ((features[:, None, :width] + 0.5 * chosen[..., :width]) ** 2).sum(-1)
        if self.onehot:  # the mismatches first, a whole number: added to a tiny distance, 1 - 1 would round it
            squared = squared + ((features[:, None, width:] * chosen[..., width:]).sum(-1) + len(self.onehot))
        if self.compared:
            codes = getattr(self, f"codes_{c}")[index]  # [B, K, compared]
            squared = squared + (rows[:, None, self.compared] != codes).to(squared.dtype).sum(-1)
        return squared

    def nearest(self, rows: Tensor, k: int) -> list[Tensor | None]:
        """Per class, the squared distances to its k + SPARE_CANDIDATES nearest rows (all its rows if fewer) [B, K],
        in no set order, or None for a class without rows: ranked by the matrix product, measured term by term
        (`_exact`)."""
        features = self._features(rows)
        found: list[Tensor | None] = []
        for c, (start, end) in enumerate(self.class_slices):
            if start == end:
                found.append(None)
                continue
            partial = self._class_partial(rows, features, c)
            index = torch.topk(partial, min(k + SPARE_CANDIDATES, end - start), dim=1, largest=False).indices
            found.append(self._exact(rows, features, c, index))
        return found

    def mean_nearest(self, nearest: list[Tensor | None], k: int) -> Tensor:
        """Mean Euclidean distance to the k nearest reference rows of any class, [B] (`nearest` from `nearest(rows,
        k)`: the k nearest of all are among the k nearest of each class)."""
        blocks = torch.cat([block for block in nearest if block is not None], dim=1)
        return torch.topk(blocks, min(k, self.n_rows), dim=1, largest=False).values.sqrt().mean(1)

    def class_margin(self, nearest: list[Tensor | None]) -> Tensor:
        """[B, C]: log of the distance to the nearest row of any other class over that to the nearest of class c
        (each + MARGIN_EPSILON), from `nearest(rows, k)`; needs two or more classes. A class without training rows
        is far from every row."""
        some = next(block for block in nearest if block is not None)
        absent = some[:, :1] * 0.0 + ABSENT_CLASS_DISTANCE
        closest = [absent if block is None else block.min(dim=1, keepdim=True).values for block in nearest]
        distance = torch.cat(closest, dim=1).sqrt()
        two = torch.topk(distance, 2, dim=1, largest=False)  # the nearest class and the runner-up
        classes = torch.arange(distance.shape[1], device=distance.device)
        other = torch.where(classes == two.indices[:, :1], two.values[:, 1:2], two.values[:, :1])
        return torch.log(other + MARGIN_EPSILON) - torch.log(distance + MARGIN_EPSILON)


def fit_neighbors(schema: Schema, rows: np.ndarray, labels: np.ndarray, n_classes: int, seed: int) -> NeighborParams:
    """Reference rows from the training split (graph units, class index per row). Within MAX_REFERENCE_ROWS every
    class keeps all its rows if it can; otherwise the largest classes share what the smaller leave, each a random
    subset drawn from `seed`."""
    rng = np.random.default_rng(seed)
    rows = np.asarray(rows, dtype=np.float32)
    counts = np.bincount(labels, minlength=n_classes)
    quota = _quotas(counts, MAX_REFERENCE_ROWS)
    parts = [rng.permutation(np.flatnonzero(labels == c))[: quota[c]] for c in range(n_classes)]
    reference = rows[np.concatenate([np.sort(p) for p in parts])]
    categorical = np.array([c.kind == "categorical" for c in schema.columns], dtype=bool)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-gap column: mean and spread NaN, handled below
        mean, spread = np.nanmean(reference, 0), np.nanstd(reference, 0)
    center = np.where(categorical | ~np.isfinite(mean), 0.0, mean).astype(np.float32)
    scale = np.where(categorical | (spread <= 0) | ~np.isfinite(spread), 1.0, spread).astype(np.float32)
    levels = np.array([len(c.categories or ()) if c.kind == "categorical" else 0 for c in schema.columns])
    return NeighborParams(reference, quota, center, scale, categorical, levels)


def _quotas(counts: np.ndarray, limit: int) -> np.ndarray:
    """Rows kept per class: all of a class within its fair share; the rest of `limit` split among the others."""
    quota = np.zeros_like(counts)
    left, pending = limit, list(np.argsort(counts))
    while pending:
        share = left // len(pending)
        c = pending.pop(0)
        quota[c] = min(counts[c], share) if pending else min(counts[c], left)
        left -= quota[c]
    return quota
