"""The feature transform: invertible, exact log-Jacobian, ties, point masses and constant columns handled."""

from __future__ import annotations

import numpy as np
import torch

from synthserve.contract import Column, Schema
from training.transform import MAX_KNOTS, FeatureCodec, fit_transform


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
    assert params.onehot_sizes == (3,) and params.n_scalar == 5  # 4 values and the atom of `tied`


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


def test_point_masses_get_an_indicator_and_come_back_exactly() -> None:
    rows = _rows()
    params = fit_transform(rows, _schema(), categorical="onehot", seed=0)
    assert params.atom_columns == (1,) and params.atom_values == (0.0,)  # `tied`'s 40% zeros; not the constant
    assert params.x_knots[1, 0] > 1.0  # the map is fitted on the values off the atom (normal around 5)
    codec = FeatureCodec(params, rows.shape[1])
    x = torch.from_numpy(rows)
    z, _, onehot = codec.to_model(x)
    at_atom = rows[:, 1] == 0.0
    assert (z[at_atom, 1] == 0.0).all()  # scored like a gap: the median of the map
    assert z[at_atom, 4].min() > z[~at_atom, 4].max()  # the indicator
    codes = onehot.argmax(1, keepdim=True).float()
    np.testing.assert_array_equal(codec.from_model(z, codes).numpy()[:, 1][at_atom], 0.0)
    # Drawn from the model space's marginals, the atom comes back exactly, at its training share.
    drawn = codec.from_model(
        torch.randn(20_000, params.n_scalar, generator=torch.Generator().manual_seed(0)), codes[:1]
    )
    assert abs(float((drawn[:, 1] == 0.0).float().mean()) - at_atom.mean()) < 0.02
    assert (drawn[:, 1][drawn[:, 1] != 0.0] > 1.0).float().mean() > 0.99  # the rest from the values off it


def test_only_values_that_stand_out_are_atoms() -> None:
    rng = np.random.default_rng(3)
    schema = Schema((Column("v", "continuous", "float64"),))
    tenths = np.round(rng.normal(1.5, 0.4, (3000, 1)), 1).astype(np.float32)  # many repeats, none standing out
    assert fit_transform(tenths, schema, categorical="onehot", seed=0).atom_columns == ()
    few = np.where(rng.random((3000, 1)) < 0.03, 0.0, rng.normal(5, 1, (3000, 1))).astype(np.float32)
    assert fit_transform(few, schema, categorical="onehot", seed=0).atom_columns == ()  # 3% < ATOM_MIN_SHARE
