"""Rational-quadratic spline couplings: the spline's inverse and log-derivative, and a spline flow trained and
exported through `synthserve train --option coupling=spline` (parity, a density that integrates to one, a better
fit than affine couplings on two moons)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from training.cli import main as cli_main
from training.exported import ExportedModel
from training.models.spline import rational_quadratic
from training.parity import PARITY_ROUNDING_FACTOR

BOUND = 4.0


def _parameters(seed: int, batch: int = 3000, columns: int = 3, bins: int = 8) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(batch, columns, k, generator=generator) for k in (bins, bins, bins - 1))


def test_inverse_undoes_forward_and_log_derivatives_cancel() -> None:
    x = 2.5 * torch.randn(3000, 3, generator=torch.Generator().manual_seed(0))
    params = _parameters(1)
    y, forward = rational_quadratic(x, *params, BOUND, inverse=False)
    back, inverse = rational_quadratic(y, *params, BOUND, inverse=True)
    torch.testing.assert_close(back, x, atol=2e-3, rtol=0)
    torch.testing.assert_close(forward + inverse, torch.zeros_like(forward), atol=2e-3, rtol=0)
    assert ((y.abs() <= BOUND) == (x.abs() <= BOUND)).all()  # the interval maps onto itself


def test_log_derivative_is_the_slope_and_the_map_is_monotone() -> None:
    x = torch.linspace(-5.0, 5.0, 20001, dtype=torch.float64).reshape(-1, 1)
    params = tuple(p[:1].expand(len(x), -1, -1).double() for p in _parameters(2, batch=1, columns=1))
    y, log_derivative = rational_quadratic(x, *params, BOUND, inverse=False)
    assert (torch.diff(y[:, 0]) > 0).all()
    slope = torch.diff(y[:, 0]) / torch.diff(x[:, 0])
    midpoint = 0.5 * (log_derivative[1:, 0] + log_derivative[:-1, 0])
    error = (torch.log(slope) - midpoint).abs()
    # Second-order exact away from the knots; next to a narrow bin's knots the curvature costs a few 1e-3.
    assert float((error < 1e-3).double().mean()) > 0.999 and float(error.max()) < 0.01, float(error.max())
    outside = x[:, 0].abs() > BOUND
    torch.testing.assert_close(y[outside], x[outside])  # identity tails, slope 1
    assert (log_derivative[outside] == 0).all()


def test_zero_parameters_are_the_identity() -> None:
    x = torch.randn(100, 2)
    zeros = [torch.zeros(100, 2, k) for k in (8, 8, 7)]
    y, log_derivative = rational_quadratic(x, *zeros, BOUND, inverse=False)
    torch.testing.assert_close(y, x, atol=1e-6, rtol=0)
    torch.testing.assert_close(log_derivative, torch.zeros_like(x), atol=1e-6, rtol=0)


def _moons(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    upper = rng.random(n) < 0.5
    angle = rng.uniform(0, np.pi, n)
    x = np.where(upper, np.cos(angle), 1 - np.cos(angle)) + rng.normal(0, 0.08, n)
    y = np.where(upper, np.sin(angle), 0.5 - np.sin(angle)) + rng.normal(0, 0.08, n)
    return pd.DataFrame({"x": x, "y": y})


@pytest.fixture(scope="module")
def moons(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ExportedModel]:
    """Unconditional flows on two moons, spline and affine couplings, the same schedule."""
    directory = tmp_path_factory.mktemp("moons")
    _moons(1500, 0).to_csv(directory / "moons.csv", index=False)
    models = {}
    for coupling in ("spline", "affine"):
        argv = ["train", "--data", str(directory / "moons.csv"), "--model", "flow", "--name", coupling]
        argv += ["--model-store", str(directory), "--option", f"coupling={coupling}", "--epochs", "60"]
        assert cli_main([*argv, "--threads", "1", "--no-progress", "--no-plots", "--onnx-exporter", "torchscript"]) == 0
        models[coupling] = ExportedModel(directory / coupling / "1")
    return models


def test_spline_flow_exports_within_parity_and_records_its_coupling(moons: dict[str, ExportedModel]) -> None:
    manifest = moons["spline"].manifest
    assert manifest.training["family_config"]["coupling"] == "spline"
    assert manifest.metrics["export_parity"]["worst_rounding_ratio"] <= PARITY_ROUNDING_FACTOR


def test_spline_density_integrates_to_one(moons: dict[str, ExportedModel]) -> None:
    xs = np.arange(-2.0, 3.0, 0.005)
    ys = np.arange(-1.5, 2.0, 0.005)
    grid = np.stack(np.meshgrid(xs, ys, indexing="ij"), axis=-1).reshape(-1, 2).astype(np.float32)
    log_prob, _, _ = moons["spline"].log_prob(grid)
    mass = float(np.exp(log_prob.astype(np.float64)).sum() * 0.005 * 0.005)
    assert 0.9 < mass < 1.1, mass


def test_splines_fit_two_moons_better_than_affine_couplings(moons: dict[str, ExportedModel]) -> None:
    """Mean log-density of fresh moons rows (the ONNX graphs): splines bend where affine maps cannot."""
    rows = _moons(2000, 1).to_numpy(np.float32)
    fit = {name: float(model.log_prob(rows)[0].astype(np.float64).mean()) for name, model in moons.items()}
    assert fit["spline"] > fit["affine"] + 0.1, fit


@pytest.mark.parametrize("inverse", [False, True])
def test_float32_calls_get_the_exact_spline_rounded_once(inverse: bool) -> None:
    # Steep and flat bins (large raw parameters): in float32 the knots' rounding, through a steep bin's inverse,
    # moved outputs by many float32 roundings and exported graphs failed parity on some trained models.
    x = 2.5 * torch.randn(20000, 3, generator=torch.Generator().manual_seed(3))
    params = tuple(6.0 * p for p in _parameters(4, batch=20000))
    y32, log32 = rational_quadratic(x, *params, BOUND, inverse=inverse)
    y64, log64 = rational_quadratic(x.double(), *(p.double() for p in params), BOUND, inverse=inverse)
    assert y32.dtype == log32.dtype == torch.float32
    ulp = torch.finfo(torch.float32).eps
    # The float32 result is the float64 spline rounded once: 0.33 units here (forward and inverse), where the
    # spline computed in float32 was 3,073 (forward) and 1,233 (inverse) units off.
    assert float(((y32.double() - y64).abs() / (y64.abs() + 1.0)).max()) < 2 * ulp
    assert float((log32.double() - log64).abs().max()) < 1e-5  # 1e-6 here; 0.0087 and 1.41 in float32
