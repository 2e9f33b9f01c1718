"""How a request's rows are divided among classes (class proportions and Balance)."""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["largest_remainder"]


def largest_remainder(n_rows: int, weights: Sequence[float]) -> tuple[int, ...]:
    """Exact integer counts summing to `n_rows`, proportional to `weights`; ties go to the lower class index.

    Rows are then ordered by class index, so the rows of a request with proportions are a pure function of
    (seed, proportions, n_rows): the same on every server, archive and client.
    """
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
