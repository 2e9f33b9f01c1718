"""The reversible feature transform between rows in original units and the models' normalized space.

Fitted on training rows only, in numpy; applied inside the exported graphs by `FeatureCodec`, so graphs take
and return rows in original units and category codes.
- continuous columns: a monotone piecewise-linear map onto standard-normal quantiles (at most one knot per
  10 training rows, <= 64 knots), extrapolated linearly beyond the training range; exact log|dz/dx|.
- integer columns (and, in "ordinal" mode, categorical codes): dequantized to x + u, u ~ U[0, 1), then the
  same map; rows come back as floor(.) clipped to the training range. Densities use the midpoint x + 0.5.
- categorical columns in "onehot" mode: one block of K indicators each (VAE and GAN likelihoods).
Model space is [scalar columns (S) | one-hot blocks (sum K)].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import ndtri
from torch import Tensor, nn

from synthserve.contract import Schema

__all__ = ["MAX_KNOTS", "ROWS_PER_KNOT", "FeatureCodec", "TransformParams", "fit_transform"]

MAX_KNOTS = 64
ROWS_PER_KNOT = 10
MIN_KNOTS = 4


@dataclass(frozen=True)
class TransformParams:
    """Fitted parameters: knots per scalar column and the one-hot block sizes."""

    scalar_columns: tuple[int, ...]  # positions in `rows`
    discrete: tuple[bool, ...]  # per scalar column: dequantized (integer / ordinal categorical)
    x_knots: np.ndarray  # [S, K] strictly increasing, original units (dequantized for discrete)
    z_knots: np.ndarray  # [S, K] strictly increasing, normal quantiles
    lower: np.ndarray  # [S] smallest value a discrete column may take
    upper: np.ndarray  # [S] largest
    onehot_columns: tuple[int, ...]
    onehot_sizes: tuple[int, ...]

    @property
    def n_scalar(self) -> int:
        return len(self.scalar_columns)

    @property
    def model_width(self) -> int:
        return self.n_scalar + sum(self.onehot_sizes)


def _monotone_knots(values: np.ndarray, n_knots: int) -> tuple[np.ndarray, np.ndarray]:
    """Quantile knots (x_k, z_k), ties merged so both are strictly increasing, padded to `n_knots`."""
    n = len(values)
    levels = np.linspace(0.0, 1.0, n_knots)
    x = np.quantile(values, levels)
    z = ndtri(np.clip(levels, 0.5 / n, 1.0 - 0.5 / n))
    ux, first = np.unique(x, return_index=True)
    if len(ux) < 2:
        centre = float(ux[0])
        ux, uz = np.array([centre - 0.5, centre + 0.5]), np.array([-1.0, 1.0])
    else:
        # A tie (a point mass in the data) keeps the mean of its normal quantiles.
        counts = np.diff(np.append(first, len(x)))
        uz = np.add.reduceat(z, first) / counts
    # Extend with the last segment's slope: the map is unchanged and every column has n_knots knots.
    dx, dz = ux[-1] - ux[-2], uz[-1] - uz[-2]
    extra = np.arange(1, n_knots - len(ux) + 1)
    return np.concatenate([ux, ux[-1] + extra * dx]), np.concatenate([uz, uz[-1] + extra * dz])


def fit_transform(rows: np.ndarray, schema: Schema, *, categorical: str, seed: int) -> TransformParams:
    """Fit on training rows (float32 codes). `categorical` is "onehot" or "ordinal"."""
    if categorical not in ("onehot", "ordinal"):
        raise ValueError(f"categorical encoding must be 'onehot' or 'ordinal', got {categorical!r}")
    rng = np.random.default_rng(seed)
    n_knots = int(np.clip(len(rows) // ROWS_PER_KNOT, MIN_KNOTS, MAX_KNOTS))
    scalar, discrete, xs, zs, lower, upper, onehot, sizes = [], [], [], [], [], [], [], []
    for j, col in enumerate(schema.columns):
        values = rows[:, j].astype(np.float64)
        if col.kind == "categorical" and categorical == "onehot":
            assert col.categories is not None
            onehot.append(j)
            sizes.append(len(col.categories))
            continue
        is_discrete = col.kind != "continuous"
        if is_discrete:
            values = values + rng.random(len(values))
        x, z = _monotone_knots(values, n_knots)
        scalar.append(j)
        discrete.append(is_discrete)
        xs.append(x)
        zs.append(z)
        if col.kind == "categorical":
            assert col.categories is not None
            lower.append(0.0)
            upper.append(float(len(col.categories) - 1))
        else:
            lower.append(float(rows[:, j].min()))
            upper.append(float(rows[:, j].max()))
    empty = np.zeros((0, n_knots))
    return TransformParams(
        tuple(scalar),
        tuple(discrete),
        np.stack(xs) if xs else empty,
        np.stack(zs) if zs else empty,
        np.asarray(lower),
        np.asarray(upper),
        tuple(onehot),
        tuple(sizes),
    )


def _take(values: Tensor, index: Tensor) -> Tensor:
    """values [N], index [B, S] int64 -> values[index] [B, S] (one ONNX Gather, not GatherND with transposes)."""
    return values.index_select(0, index.reshape(-1)).reshape(index.shape)


def _search_table(knots: Tensor) -> tuple[Tensor, int]:
    """Each column's interior knots padded with +inf to 2^m - 1 entries, flattened: the table of a binary search.

    knots [S, K] -> (table [S * (2^m - 1)], m) with 2^m - 1 >= K - 2.
    """
    n_inner = knots.shape[1] - 2
    n_steps = max(n_inner, 0).bit_length()
    padded = torch.full((knots.shape[0], 2**n_steps - 1), math.inf, dtype=knots.dtype)
    padded[:, :n_inner] = knots[:, 1:-1]
    return padded.reshape(-1), n_steps


def _segment(x: Tensor, table: Tensor, n_steps: int, n_segments: int) -> Tensor:
    """Per column, the number of interior knots <= x, i.e. x's segment: x [B, S] -> [B, S] int32 in [0, K-2].

    A binary search of `n_steps` gathers (torch.searchsorted does not export to ONNX; counting comparisons
    against every knot costs K elements per value and was half of a sampling graph's time). Positions move by
    arithmetic on int32, which ONNX Runtime runs twice as fast as Where on int64.
    """
    width = 2**n_steps - 1
    base = (torch.arange(x.shape[1], device=x.device) * width).to(torch.int32)  # [S] each column's table start
    position = torch.zeros_like(x, dtype=torch.int32) + base
    for step in (2**i for i in reversed(range(n_steps))):
        position = position + (_take(table, position + (step - 1)) <= x).to(torch.int32) * step
    # An infinite x passes the +inf padding; the last segment extends to infinity.
    return torch.clamp(position - base, max=n_segments - 1)


def _segment_table(knots_in: Tensor, knots_out: Tensor) -> Tensor:
    """Per column and segment (start in, start out, slope): [S, K-1, 3], so a map needs one Gather, not three."""
    slope = (knots_out[:, 1:] - knots_out[:, :-1]) / (knots_in[:, 1:] - knots_in[:, :-1])
    return torch.stack([knots_in[:, :-1], knots_out[:, :-1], slope], dim=-1)


def _piecewise(x: Tensor, search: tuple[Tensor, int], segments: Tensor) -> tuple[Tensor, Tensor]:
    """Evaluate the piecewise-linear maps column-wise: x [B, S], segments [S, K-1, 3] -> (y [B, S], slope [B, S])."""
    n_columns, n_segments = segments.shape[0], segments.shape[1]
    segment = _segment(x, search[0], search[1], n_segments)
    flat = segment + (torch.arange(n_columns, device=x.device) * n_segments).to(torch.int32)
    table = segments.reshape(-1, 3)
    start_in, start_out, k = table.index_select(0, flat.reshape(-1)).reshape(*flat.shape, 3).unbind(-1)
    return start_out + k * (x - start_in), k


class FeatureCodec(nn.Module):
    """Torch side of the transform, exported inside every graph (parameters are buffers)."""

    discrete: Tensor
    x_knots: Tensor
    z_knots: Tensor
    x_search: Tensor
    z_search: Tensor
    forward_segments: Tensor
    inverse_segments: Tensor
    lower: Tensor
    upper: Tensor
    place_scalar: Tensor
    place_codes: Tensor

    def __init__(self, params: TransformParams, n_columns: int) -> None:
        super().__init__()
        self.n_columns = n_columns
        self.n_scalar = params.n_scalar
        self.onehot_sizes = params.onehot_sizes
        # Plain ints (not a buffer): slicing with them keeps every shape static for the exporter.
        self.onehot_positions = params.onehot_columns
        x = torch.as_tensor(params.x_knots, dtype=torch.float32)
        z = torch.as_tensor(params.z_knots, dtype=torch.float32)
        self.register_buffer("discrete", torch.as_tensor(params.discrete, dtype=torch.bool))
        self.register_buffer("x_knots", x)
        self.register_buffer("z_knots", z)
        x_search, self.search_steps = _search_table(x)
        self.register_buffer("x_search", x_search)
        self.register_buffer("z_search", _search_table(z)[0])
        self.register_buffer("forward_segments", _segment_table(x, z))
        self.register_buffer("inverse_segments", _segment_table(z, x))
        self.register_buffer("lower", torch.as_tensor(params.lower, dtype=torch.float32))
        self.register_buffer("upper", torch.as_tensor(params.upper, dtype=torch.float32))
        # Scatter matrices place scalar and categorical columns back into row order without index_put.
        place_scalar = torch.zeros(max(params.n_scalar, 1), n_columns)
        for i, j in enumerate(params.scalar_columns):
            place_scalar[i, j] = 1.0
        place_codes = torch.zeros(max(len(params.onehot_columns), 1), n_columns)
        for i, j in enumerate(params.onehot_columns):
            place_codes[i, j] = 1.0
        self.register_buffer("place_scalar", place_scalar[: params.n_scalar])
        self.register_buffer("place_codes", place_codes[: len(params.onehot_columns)])

    def to_model(self, rows: Tensor, dequant: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """rows [B, D] -> (scalar z [B, S], log|dz/dx| [B], one-hot [B, sum K]).

        `dequant` [B, S] in [0, 1) is added to discrete columns (training); None uses the midpoint 0.5.
        """
        blocks = [
            (rows[:, j : j + 1] == torch.arange(k, device=rows.device, dtype=rows.dtype)).to(rows.dtype)
            for j, k in zip(self.onehot_positions, self.onehot_sizes)
        ]
        onehot = torch.cat(blocks, dim=1) if blocks else rows[:, :0]
        if self.n_scalar == 0:  # all-categorical tables: no zero-width tensors in the exported graph
            return rows[:, :0], torch.zeros_like(rows[:, 0]), onehot
        x = rows @ self.place_scalar.T  # the scalar columns, exactly (a Gemm; indexing exports as GatherND)
        offset = torch.full_like(x, 0.5) if dequant is None else dequant
        x = x + offset * self.discrete.to(x.dtype)
        z, slope = _piecewise(x, (self.x_search, self.search_steps), self.forward_segments)
        return z, torch.log(slope).sum(-1), onehot

    def from_model(self, z: Tensor, codes: Tensor | None) -> Tensor:
        """(scalar z [B, S], category codes [B, n_onehot] as float) -> rows [B, D] in original units."""
        if self.n_scalar == 0:
            assert codes is not None
            return codes @ self.place_codes
        x, _ = _piecewise(z, (self.z_search, self.search_steps), self.inverse_segments)
        floored = torch.minimum(torch.maximum(torch.floor(x), self.lower), self.upper)
        x = torch.where(self.discrete, floored, x)
        rows = x @ self.place_scalar
        if codes is not None and self.place_codes.shape[0] > 0:
            rows = rows + codes @ self.place_codes
        return rows
