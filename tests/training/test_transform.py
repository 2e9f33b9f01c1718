"""The feature transform: invertible, exact log-Jacobian, ties and constant columns handled."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from synthserve.contract import Column, Schema
from training.transform import MAX_KNOTS, FeatureCodec, PiecewiseLinear, fit_transform


def _schema() -> Schema:
    return Schema(
        (
            Column("x", "continuous", "float64"),
            Column("tied", "continuous", "float64"),
            Column("count", "integer", "int64"),
            Column("const", "continuous", "float64"),
            Column("kind", "categorical", "object", categories=("a", "b", "c")),
        )
    )


def _rows(n: int = 2000) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.stack(
        [
            rng.lognormal(0, 1, n),
            np.where(rng.random(n) < 0.4, 0.0, rng.normal(5, 1, n)),  # a point mass at 0
            rng.poisson(7, n),
            np.full(n, 2.5),
            rng.integers(0, 3, n),
        ],
        axis=1,
    ).astype(np.float32)


def test_knots_are_strictly_increasing_and_capped() -> None:
    params = fit_transform(_rows(), _schema(), categorical="onehot", seed=0)
    assert params.x_knots.shape[1] == MAX_KNOTS
    assert (np.diff(params.x_knots, axis=1) > 0).all() and (np.diff(params.z_knots, axis=1) > 0).all()
    assert params.onehot_sizes == (3,) and params.n_scalar == 4


def test_round_trip_and_log_jacobian() -> None:
    rows = _rows()
    for encoding in ("onehot", "ordinal"):
        params = fit_transform(rows, _schema(), categorical=encoding, seed=0)
        codec = FeatureCodec(params, rows.shape[1])
        x = torch.from_numpy(rows)
        z, log_det, onehot = codec.to_model(x)
        codes = onehot.argmax(1, keepdim=True).float() if onehot.shape[1] else None
        back = codec.from_model(z, codes).numpy()
        np.testing.assert_allclose(back, rows, rtol=1e-5, atol=1e-5)
        # Within a segment the map is linear: finite differences equal the analytic log-derivative.
        single_params = fit_transform(rows[:, :1], Schema((_schema().columns[0],)), categorical=encoding, seed=0)
        single = FeatureCodec(single_params, 1)
        step = 1e-2
        x0 = x[:, :1].double().float()
        z_a, log_det_x, _ = single.to_model(x0)
        z_b, _, _ = single.to_model(x0 + step)
        knots = single_params.x_knots[0]
        same = np.searchsorted(knots, x0[:, 0].numpy()) == np.searchsorted(knots, (x0[:, 0] + step).numpy())
        assert same.mean() > 0.5
        numeric = torch.log((z_b[:, 0] - z_a[:, 0]) / step)
        np.testing.assert_allclose(numeric.numpy()[same], log_det_x.numpy()[same], atol=2e-3)
        assert torch.isfinite(log_det).all()


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
