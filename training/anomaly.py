"""The anomaly score a `log_prob` graph serves beside log p(x): density and distance to the training rows, mixed.

    anomaly_score(x) = (-log p(x) - c_density) / s_density + (d_k(x) - c_distance) / s_distance

- d_k(x) is the mean distance from x to its k = 5 nearest reference rows: the training rows the graph holds
  (training/neighbors.py, which says how distances are measured).
- c and s are the median and the normal-equivalent interquartile range (IQR / 1.349) of each term over the
  validation rows, which the model did not train on; so each term counts in units of its spread on unseen normal
  rows, and a row far outside the training data scores high on either.
Higher is more anomalous; a row whose log p(x) is not a number scores NaN, which `Scores.is_anomaly` flags.
docs/quality.md ("Anomaly scores") has the measurement behind this default: on the development datasets the mix
finds anomalies better than either term alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from training.neighbors import Neighbors

__all__ = ["ANOMALY_NEIGHBORS", "AnomalyParams", "AnomalyScore", "fit_anomaly_score"]

ANOMALY_NEIGHBORS = 5
MIN_CALIBRATION_ROWS = 8  # fewer validation rows than this: the training rows calibrate (leave-one-out distances)
NORMAL_IQR = 1.349  # the interquartile range of a standard normal


@dataclass(frozen=True)
class AnomalyParams:
    """Where each term is centred and how it is scaled (the distances come from the model's Neighbors)."""

    density_center: float
    density_scale: float
    distance_center: float
    distance_scale: float


class AnomalyScore(nn.Module):
    """log p(x) [B] and the mean distance to the k nearest reference rows [B] -> anomaly score [B]; exported
    inside the `log_prob` graph."""

    def __init__(self, params: AnomalyParams) -> None:
        super().__init__()
        self.params = params

    def forward(self, log_prob: Tensor, distance: Tensor) -> Tensor:
        p = self.params
        return (-log_prob - p.density_center) / p.density_scale + (distance - p.distance_center) / p.distance_scale


def nearest_distance(neighbors: Neighbors, rows: Tensor, k: int = ANOMALY_NEIGHBORS) -> Tensor:
    """d_k(rows) [B]: the score's distance term."""
    return neighbors.mean_nearest(neighbors.nearest(rows, k), k)


def fit_anomaly_score(
    density: Callable[[np.ndarray], np.ndarray], neighbors: Neighbors, validation_rows: np.ndarray
) -> AnomalyScore:
    """The score for a trained model: `density(rows [N, D] float32) -> log p(x) [N]` is the model's eager log p(x);
    centers and spreads from `validation_rows` (graph units)."""
    heldout = len(validation_rows) >= MIN_CALIBRATION_ROWS
    k = min(ANOMALY_NEIGHBORS, neighbors.n_rows)
    # A tiny table: too few validation rows for a spread, so the reference rows calibrate, each scored against the
    # others (its own distance, 0, left out of the mean of its k + 1 nearest).
    rows = np.asarray(validation_rows if heldout else neighbors.params.reference, dtype=np.float32)
    with torch.no_grad():
        log_prob = np.asarray(density(rows), dtype=np.float64)
        if heldout or neighbors.n_rows <= k:
            distance = nearest_distance(neighbors, torch.from_numpy(rows), k).numpy().astype(np.float64)
        else:
            total = nearest_distance(neighbors, torch.from_numpy(rows), k + 1).numpy().astype(np.float64) * (k + 1)
            distance = total / k
    density_center, density_scale = _robust(-log_prob)
    distance_center, distance_scale = _robust(distance)
    return AnomalyScore(AnomalyParams(density_center, density_scale, distance_center, distance_scale))


def _robust(values: np.ndarray) -> tuple[float, float]:
    """Median and normal-equivalent IQR of the finite values (spread 1 when they do not vary)."""
    finite = values[np.isfinite(values)]
    if not len(finite):
        return 0.0, 1.0
    q1, median, q3 = np.percentile(finite, [25, 50, 75])
    spread = (q3 - q1) / NORMAL_IQR
    if not spread > 0:
        spread = float(finite.std()) or 1.0
    return float(median), float(spread)
