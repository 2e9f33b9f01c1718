"""Rational-quadratic spline couplings (Durkan et al. 2019, "Neural Spline Flows"), exportable to ONNX.

Each transformed column passes through a monotone rational-quadratic spline on [-bound, bound] with `bins` bins
whose widths, heights and interior knot derivatives come from a network of the untouched half and the class;
outside the interval the map is the identity (linear tails: the boundary derivatives are 1). The spline has an
analytic inverse (the root of a quadratic) and log-derivative, so density is one pass and sampling one inverse
pass, like the affine coupling, but each column's map can bend: multimodal and skewed conditionals that an
affine map cannot fit.

Finding a value's bin uses a comparison against the knots summed over the bin axis, not `torch.searchsorted`
(which does not export to ONNX); the bin's parameters are then gathered along that axis.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from training.models.base import mlp

__all__ = ["MIN_BIN", "MIN_DERIVATIVE", "SplineCoupling", "rational_quadratic"]

MIN_BIN = 1e-3  # smallest bin width and height, as a share of the interval
MIN_DERIVATIVE = 1e-3
# softplus(raw + DERIVATIVE_SHIFT) + MIN_DERIVATIVE == 1 at raw == 0: a zero-initialized network is the identity.
DERIVATIVE_SHIFT = math.log(math.expm1(1.0 - MIN_DERIVATIVE))


def _softmax(raw: Tensor) -> Tensor:
    """Softmax over the last axis as elementwise ops: ONNX Runtime's Softmax is slow on a short float64 axis."""
    shifted = torch.exp(raw - raw.amax(dim=-1, keepdim=True))
    return shifted / shifted.sum(dim=-1, keepdim=True)


def _softplus(x: Tensor) -> Tensor:
    """log(1 + e^x) as elementwise ops (ONNX Runtime's Softplus kernel is scalar, and float32 only)."""
    return torch.clamp(x, min=0.0) + torch.log1p(torch.exp(-x.abs()))


def _bins(raw: Tensor, bound: float) -> tuple[Tensor, Tensor]:
    """Unnormalized bin sizes [..., K] -> (left edges [..., K], from -bound, and widths [..., K], summing to
    2 * bound): the knots without the right end, which the tails meet (the last bin ends at bound)."""
    bins = raw.shape[-1]
    sizes = MIN_BIN + (1.0 - MIN_BIN * bins) * _softmax(raw)
    # cumsum - sizes is exactly 0 in the first bin, so the first edge is exactly -bound.
    return (torch.cumsum(sizes, dim=-1) - sizes) * (2.0 * bound) - bound, sizes * (2.0 * bound)


def _at(values: Tensor, index: Tensor) -> Tensor:
    """values [..., K], index [...] int64 -> values[..., index] [...]."""
    return torch.gather(values, -1, index.unsqueeze(-1)).squeeze(-1)


def rational_quadratic(
    x: Tensor, width_raw: Tensor, height_raw: Tensor, derivative_raw: Tensor, bound: float, inverse: bool
) -> tuple[Tensor, Tensor]:
    """x [B, S], parameters [B, S, K] (derivatives [B, S, K - 1]) -> (y [B, S], log|dy/dx| [B, S]).

    `inverse` maps y back to x and returns log|dx/dy| (the negative of the forward log-derivative at x).

    The spline is computed in float64 and returned in x's dtype: in float32 the knots' softmax and cumsum round
    differently in each runtime, and a steep bin's inverse (the quadratic's root) turns those roundings into many
    times the output's own float32 rounding, so exported graphs failed the parity check on some trained models.
    In float64 every runtime lands within one float32 rounding of the exact spline. Softmax and softplus are
    written as elementwise ops, which ONNX Runtime runs several times faster than its kernels for them."""
    dtype = x.dtype
    x = x.double()
    inside = (x >= -bound) & (x <= bound)
    # Computed on the clamped value everywhere, so outside rows carry no NaN or inf into where's gradients.
    v = torch.clamp(x, -bound, bound)
    x_left, widths = _bins(width_raw.double(), bound)
    y_left, heights = _bins(height_raw.double(), bound)
    slopes = MIN_DERIVATIVE + _softplus(derivative_raw.double() + DERIVATIVE_SHIFT)
    ones = torch.ones_like(slopes[..., :1])
    derivatives = torch.cat([ones, slopes, ones], dim=-1)  # at the K + 1 knots; 1 at the ends (linear tails)
    # The bin: how many interior knots lie at or below the value (ONNX has no searchsorted).
    index = (v.unsqueeze(-1) >= (y_left if inverse else x_left)[..., 1:]).sum(-1)
    x0, width, y0, height = _at(x_left, index), _at(widths, index), _at(y_left, index), _at(heights, index)
    d0, d1 = _at(derivatives, index), _at(derivatives, index + 1)
    slope = height / width
    bend = d0 + d1 - 2.0 * slope
    if inverse:
        offset = v - y0
        a = offset * bend + height * (slope - d0)
        b = height * d0 - offset * bend
        c = -slope * offset
        root = torch.clamp(b * b - 4.0 * a * c, min=0.0).sqrt()
        theta = torch.clamp((2.0 * c) / (-b - root), 0.0, 1.0)
        out = x0 + theta * width
    else:
        theta = torch.clamp((v - x0) / width, 0.0, 1.0)
        mixed = theta * (1.0 - theta)
        out = y0 + height * (slope * theta * theta + d0 * mixed) / (slope + bend * mixed)
    mixed = theta * (1.0 - theta)
    denominator = slope + bend * mixed
    numerator = slope * slope * (d1 * theta * theta + 2.0 * slope * mixed + d0 * (1.0 - theta) ** 2)
    log_derivative = torch.log(numerator) - 2.0 * torch.log(denominator)
    if inverse:
        log_derivative = -log_derivative
    y = torch.where(inside, out, x).to(dtype)
    return y, torch.where(inside, log_derivative, torch.zeros_like(log_derivative)).to(dtype)


class SplineCoupling(nn.Module):
    """y = x after permutation; y_b = spline(x_b; theta(x_a, c)) column by column. Exact inverse and log|det J|."""

    permute: Tensor

    def __init__(self, dim: int, n_cond: int, hidden: int, bins: int, bound: float, permutation: Tensor) -> None:
        super().__init__()
        self.split = dim // 2
        self.bins, self.bound = bins, bound
        self.n_out = dim - self.split
        self.net = mlp(self.split + n_cond, hidden, self.n_out * (3 * bins - 1))
        last = self.net[-1]
        assert isinstance(last, nn.Linear)
        nn.init.zeros_(last.weight)  # uniform bins and unit derivatives: starts as the identity
        nn.init.zeros_(last.bias)
        self.register_buffer("permute", torch.eye(dim, dtype=torch.bool)[:, permutation])  # see AffineCoupling

    def _spline(self, x_a: Tensor, cond: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        raw = self.net(torch.cat([x_a, cond], dim=1)).reshape(-1, self.n_out, 3 * self.bins - 1)
        widths, heights, derivatives = torch.split(raw, [self.bins, self.bins, self.bins - 1], dim=-1)
        return widths, heights, derivatives

    def forward(self, x: Tensor, cond: Tensor) -> tuple[Tensor, Tensor]:
        """x [B, D] -> (y [B, D], log|det J| [B])."""
        x = x @ self.permute.to(x.dtype)
        x_a, x_b = x[:, : self.split], x[:, self.split :]
        y_b, log_derivative = rational_quadratic(x_b, *self._spline(x_a, cond), self.bound, inverse=False)
        return torch.cat([x_a, y_b], dim=1), log_derivative.sum(1)

    def inverse(self, y: Tensor, cond: Tensor) -> Tensor:
        y_a, y_b = y[:, : self.split], y[:, self.split :]
        x_b, _ = rational_quadratic(y_b, *self._spline(y_a, cond), self.bound, inverse=True)
        return torch.cat([y_a, x_b], dim=1) @ self.permute.T.to(y.dtype)
