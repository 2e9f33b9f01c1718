"""The piecewise-linear map finds the segment `numpy.searchsorted` finds, for every value, knots and infinities."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.piecewise import PiecewiseLinear
from training.transform import MAX_KNOTS


def _knot_sets() -> list[np.ndarray]:
    """[S, K] knots: random, skewed (dense at one end, as for long-tailed columns), wide, and the smallest sizes."""
    rng = np.random.default_rng(0)
    sets = [np.sort(rng.normal(size=(3, k)), axis=1) for k in (2, 3, 4, 5, 17, MAX_KNOTS)]
    sets.append(np.stack([np.sort(rng.lognormal(sigma=3.0, size=MAX_KNOTS)), np.linspace(-1e4, 1e4, MAX_KNOTS)]))
    sets.append(np.concatenate([[0.0], np.cumsum(rng.exponential(size=MAX_KNOTS - 1) ** 4)])[None])
    return [s.astype(np.float32) for s in sets if (np.diff(s, axis=1) > 0).all()]


@pytest.mark.parametrize("knots", _knot_sets(), ids=lambda k: f"{k.shape[0]}x{k.shape[1]}")
def test_piecewise_map_finds_the_segment_searchsorted_finds(knots: np.ndarray) -> None:
    rng = np.random.default_rng(1)
    n_columns, n_knots = knots.shape
    inner = knots[:, 1:-1]
    # Random values over and beyond the range, every knot exactly, its float32 neighbours, and the infinities.
    spread = knots[:, -1:] - knots[:, :1] + 1.0
    x = [knots[:, :1] + spread * rng.uniform(-0.5, 1.5, size=(n_columns, 500)), knots]
    x += [np.nextafter(knots, np.inf), np.nextafter(knots, -np.inf), np.full((n_columns, 2), [-np.inf, np.inf])]
    x = np.concatenate(x, axis=1).T.astype(np.float32)  # [B, S]
    out = np.cumsum(rng.uniform(0.1, 1.0, size=knots.shape), axis=1).astype(np.float32)
    y, slope = PiecewiseLinear(torch.from_numpy(knots), torch.from_numpy(out))(torch.from_numpy(x))
    segment = np.stack([np.searchsorted(inner[s], x[:, s], side="right") for s in range(n_columns)], axis=1)
    segment = np.minimum(segment, n_knots - 2)
    columns = np.arange(n_columns)
    start_in, start_out = knots[columns, segment], out[columns, segment]
    expected_slope = (out[columns, segment + 1] - start_out) / (knots[columns, segment + 1] - start_in)
    np.testing.assert_array_equal(slope.numpy(), expected_slope)
    finite = np.isfinite(x)
    np.testing.assert_array_equal(y.numpy()[finite], (start_out + expected_slope * (x - start_in))[finite])
