"""What a graph's runs cost, fitted from their timings: sizes heavy graphs' runs and tells when merging pays."""

from __future__ import annotations

__all__ = ["PROBE_ROWS", "RunCost"]

PROBE_ROWS = 64  # rows per run until runs of >= _SIZED_RUN_ROWS rows have been timed
_SIZED_RUN_ROWS = 64


class RunCost:
    """A batch's run time as `fixed_s + per_row_s * rows`, fitted by least squares over recent batches
    (exponentially weighted moments). Until batches of different sizes are seen, all of it counts as per-row.
    The fixed part is what merging saves, once per batch. Worker threads call `observe`; an update lost to a race
    only blurs the estimate."""

    def __init__(self, weight: float = 1 / 32) -> None:
        self._weight = weight
        self._moments: tuple[float, ...] | None = None  # E[rows], E[s], E[rows^2], E[rows * s]
        self.fixed_s = 0.0
        self.per_row_s = 0.0
        # Seconds per row of runs of >= _SIZED_RUN_ROWS rows, fixed cost included (EWMA): what sizes runs. The fit
        # above extrapolates badly from runs of nearly one size; this never under-estimates a large run.
        self.sized_row_s: float | None = None

    def observe(self, rows: int, seconds: float) -> None:
        if rows >= _SIZED_RUN_ROWS:
            row_s = seconds / rows
            self.sized_row_s = (
                row_s if self.sized_row_s is None else self.sized_row_s + 0.25 * (row_s - self.sized_row_s)
            )
        new = (rows, seconds, rows * rows, rows * seconds)
        old = self._moments or new  # the first batch starts the means (no pull towards zero)
        mean_rows, mean_s, mean_rows2, mean_rows_s = (m + self._weight * (x - m) for m, x in zip(old, new))
        self._moments = (mean_rows, mean_s, mean_rows2, mean_rows_s)
        spread = mean_rows2 - mean_rows * mean_rows
        if spread > 1e-6 * mean_rows2:
            per_row = max(0.0, (mean_rows_s - mean_rows * mean_s) / spread)
        else:
            per_row = mean_s / mean_rows if mean_rows > 0 else 0.0
        self.per_row_s = per_row
        self.fixed_s = max(0.0, mean_s - per_row * mean_rows)

    def predict(self, rows: int) -> float | None:
        """Expected run time of a batch of `rows`; None before any batch was observed."""
        return None if self._moments is None else self.fixed_s + self.per_row_s * rows

    def rows_within(self, seconds: float, cap: int) -> int:
        """The most rows (1..cap) expected to run within `seconds`, from runs of >= _SIZED_RUN_ROWS rows; before
        any, PROBE_ROWS (at most cap)."""
        if self.sized_row_s is None:
            return min(cap, PROBE_ROWS)
        return max(1, min(cap, int(seconds / max(self.sized_row_s, 1e-9))))
