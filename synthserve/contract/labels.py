"""How a request's rows are divided among classes: class lookup, label conditions, proportions and Balance counts.

Rows are laid out by class index (class c repeated counts[c] times, classes in index order), so the rows of a
request are a pure function of (seed, condition, n_rows): the same on every server, archive and client.
"""

from __future__ import annotations

import fractions
import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from synthserve.contract.errors import RequestError, UnsupportedRequest
from synthserve.contract.manifest import LabelSpec, Manifest
from synthserve.contract.quoting import shown

__all__ = [
    "BALANCE_STRATEGIES",
    "LabelRuns",
    "balance_counts",
    "class_index",
    "largest_remainder",
    "plan_labels",
]

BALANCE_STRATEGIES = ("match_majority", "target_ratio", "explicit_counts")


def largest_remainder(n_rows: int, weights: Sequence[float]) -> tuple[int, ...]:
    """Exact integer counts summing to `n_rows`, proportional to `weights`; ties go to the lower class index."""
    if n_rows < 0:
        raise ValueError(f"n_rows must be >= 0, got {n_rows}")
    if not weights or any(w < 0 or not math.isfinite(w) for w in weights):
        raise ValueError(f"weights must be finite and >= 0, got {list(weights)}")
    total = math.fsum(weights)
    if total <= 0:
        raise ValueError("weights must not all be zero")
    shares = [n_rows * w / total for w in weights]
    counts = [math.floor(s) for s in shares]
    order = sorted(range(len(weights)), key=lambda c: (-(shares[c] - counts[c]), c))
    for c in order[: n_rows - sum(counts)]:
        counts[c] += 1
    return tuple(counts)


@dataclass(frozen=True)
class LabelRuns:
    """Class index per row as runs (class c repeated counts[c] times, classes in index order): O(C) memory."""

    classes: tuple[int, ...]
    counts: tuple[int, ...]

    @property
    def n_rows(self) -> int:
        return sum(self.counts)

    def slice(self, start: int, stop: int) -> np.ndarray:
        """Class indices of rows [start, stop), int64."""
        pieces = []
        begin = 0
        for label, count in zip(self.classes, self.counts):
            end = begin + count
            overlap = min(end, stop) - max(begin, start)
            if overlap > 0:
                pieces.append(np.full(overlap, label, dtype=np.int64))
            begin = end
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces) if pieces else np.empty(0, np.int64)


def class_index(manifest: Manifest, label: str, field: str) -> int:
    """Index of a class given as text (`str()` of the class label, as both APIs take it), or RequestError naming
    `field` and the model's classes."""
    spec = _label_spec(manifest, field)
    for index, value in enumerate(spec.classes):
        if str(value) == label:
            return index
    classes = [str(c) for c in spec.classes]
    raise RequestError(f"{field}: unknown class label {shown(label)} (classes: {classes})")


def plan_labels(
    manifest: Manifest,
    n_rows: int,
    label: str | None,
    proportions: Mapping[str, float] | None,
    proportions_field: str = "proportions",
) -> LabelRuns | None:
    """Class per row of a sampling request: every row `label`, or exact counts by largest remainder of
    `proportions` (the training priors when neither is given); None for an unconditional model. Errors name
    `proportions_field`, the API's name for the weights."""
    spec = manifest.schema.label
    if spec is None:
        if label is not None or proportions is not None:
            raise RequestError(f"label/proportions: model {manifest.name!r} is unconditional")
        return None
    if label is not None:
        return LabelRuns((class_index(manifest, label, "label"),), (n_rows,))
    weights = list(spec.priors)
    if proportions is not None:
        weights = [0.0] * len(spec.classes)
        for key, weight in proportions.items():
            if not math.isfinite(weight) or weight < 0:
                raise RequestError(f"{proportions_field}[{shown(key)}] must be a finite number >= 0, got {weight}")
            weights[class_index(manifest, key, proportions_field)] = weight
        if sum(weights) <= 0:
            raise RequestError(f"{proportions_field} must have a positive sum")
        # Scaled to at most 1 (the same proportions), so n_rows * weight stays finite for weights near 1e308.
        weights = [w / max(weights) for w in weights]
    return _class_runs(n_rows, tuple(weights))


def balance_counts(
    manifest: Manifest,
    strategy: str,
    class_counts: Mapping[str, int],
    target_ratio: float = 0.0,
    explicit_counts: Mapping[str, int] | None = None,
) -> LabelRuns:
    """Rows to add per class so the caller's `class_counts` become balanced by `strategy`: up to the majority
    (match_majority), up to `target_ratio` of it (target_ratio), or as given (explicit_counts).

    Python integers throughout: counts up to int64's maximum never wrap; callers check the sum against their
    limit."""
    spec = manifest.schema.label
    if spec is None:
        raise UnsupportedRequest(f"model {manifest.name!r} is unconditional; Balance needs a class-conditional model")
    have = [0] * len(spec.classes)
    for key, count in class_counts.items():
        if count < 0:
            raise RequestError(f"class_counts[{shown(key)}] must be >= 0, got {count}")
        have[class_index(manifest, key, "class_counts")] = int(count)
    if strategy == "match_majority":
        need = [max(have) - n for n in have]
    elif strategy == "target_ratio":
        if not 0 < target_ratio <= 1:
            raise RequestError(f"target_ratio must be in (0, 1], got {target_ratio}")
        # Exact: the ratio as written (0.1 is 1/10, not the float just above it) times an exact integer.
        target = math.ceil(fractions.Fraction(repr(target_ratio)) * max(have))
        need = [max(target - n, 0) for n in have]
    elif strategy == "explicit_counts":
        need = [0] * len(have)
        for key, count in (explicit_counts or {}).items():
            if count < 0:
                raise RequestError(f"explicit_counts[{shown(key)}] must be >= 0, got {count}")
            need[class_index(manifest, key, "explicit_counts")] = int(count)
    else:
        raise RequestError(f"strategy must be MATCH_MAJORITY, TARGET_RATIO or EXPLICIT_COUNTS, got {shown(strategy)}")
    return LabelRuns(tuple(range(len(need))), tuple(need))


def _label_spec(manifest: Manifest, field: str) -> LabelSpec:
    spec = manifest.schema.label
    if spec is None:
        raise RequestError(f"{field}: model {manifest.name!r} is unconditional and takes no class labels")
    return spec


@functools.lru_cache(maxsize=4096)
def _class_runs(n_rows: int, weights: tuple[float, ...]) -> LabelRuns:
    """Cached: most requests repeat a few sizes with the training priors."""
    return LabelRuns(tuple(range(len(weights))), largest_remainder(n_rows, weights))
