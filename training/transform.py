"""The reversible feature transform between rows in original units and the models' normalized space.

Fitted on training rows only, in numpy; applied inside the exported graphs by `FeatureCodec`, so graphs take
and return rows in original units and category codes.
- continuous columns: a monotone piecewise-linear map onto standard-normal quantiles (at most one knot per
  10 training rows, <= 64 knots), extrapolated linearly beyond the training range; exact log|dz/dx|.
- integer columns (and, in "ordinal" mode, categorical codes): dequantized to x + u, u ~ U[0, 1), then the
  same map; rows come back as floor(.) clipped to the training range. Densities use the midpoint x + 0.5.
  Continuous rows come back clipped to the training range too, so no value leaves [min, max].
- categorical columns in "onehot" mode: one block of K indicators each (VAE and GAN likelihoods).
- missing values (NaN in rows): every column with gaps in training gets a missingness indicator, a discrete
  0/1 scalar the models learn jointly with the values; a gap's own value is drawn from N(0, 1) in model space
  in training (the column's marginal: the model learns "missing" as independent of that value) and is the
  median, z = 0, when scoring; its log|dz/dx| is 0. Rows come back with NaN where the indicator is 1. A
  gap in a column that had none in training is scored the same way (one-point estimate at the median).
- point masses (atoms): a continuous column whose most frequent value holds at least ATOM_MIN_SHARE of its
  values and ATOM_OVER_NEXT times the next value's share (glass's 80% zeros) gets an atom indicator, a discrete
  0/1 scalar like a missingness indicator: the column's map is fitted on the other values, a row at the atom has
  its value scored and drawn as a gap's is, and rows come back with the atom's exact value where the indicator
  is 1. Without it the quantile map turns the atom into a steep slope, and rows land near it, not on it.
Model space is [scalar columns (S) | missingness indicators (M) | atom indicators (A) | one-hot blocks (sum K)].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import ndtri
from torch import Tensor, nn

from synthserve.contract import Schema
from training.piecewise import PiecewiseLinear

__all__ = ["ATOM_MIN_SHARE", "MAX_KNOTS", "ROWS_PER_KNOT", "FeatureCodec", "TransformParams", "fit_transform"]

MAX_KNOTS = 64
ROWS_PER_KNOT = 10
MIN_KNOTS = 4
ATOM_MIN_SHARE = 0.05  # a continuous column's most frequent value is a point mass from this share of its values
ATOM_OVER_NEXT = 2.0  # ... when it also holds this many times the share of the next most frequent value
ATOM_MIN_ROWS = 5


@dataclass(frozen=True)
class TransformParams:
    """Fitted parameters: knots per scalar (values, then missingness and atom indicators) and the one-hot block
    sizes."""

    scalar_columns: tuple[int, ...]  # positions in `rows`
    discrete: tuple[bool, ...]  # per scalar (S + M + A): dequantized (integer / ordinal categorical / indicator)
    x_knots: np.ndarray  # [S + M + A, K] strictly increasing, original units (dequantized for discrete)
    z_knots: np.ndarray  # [S + M + A, K] strictly increasing, normal quantiles
    lower: np.ndarray  # [S + M + A] smallest value a column may take
    upper: np.ndarray  # [S + M + A] largest
    onehot_columns: tuple[int, ...]
    onehot_sizes: tuple[int, ...]
    missing_columns: tuple[int, ...] = ()  # positions in `rows` of the columns with a missingness indicator
    atom_columns: tuple[int, ...] = ()  # positions in `rows` of the continuous columns with a point mass
    atom_values: tuple[float, ...] = ()  # each one's point mass (a float32 value)

    @property
    def n_scalar(self) -> int:
        """Scalars of model space: the values of the scalar columns, then the missingness and atom indicators."""
        return len(self.scalar_columns) + len(self.missing_columns) + len(self.atom_columns)

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


def _atom(values: np.ndarray) -> float | None:
    """A continuous column's point mass: its most frequent value, when it stands out (ATOM_MIN_SHARE,
    ATOM_OVER_NEXT, ATOM_MIN_ROWS) and other values remain for the column's map."""
    if values.size == 0:
        return None
    levels, counts = np.unique(values, return_counts=True)
    order = np.argsort(counts)[::-1]
    top = counts[order[0]]
    following = counts[order[1]] if len(order) > 1 else 0
    if (
        top == values.size
        or top < ATOM_MIN_ROWS
        or top < ATOM_MIN_SHARE * values.size
        or top < ATOM_OVER_NEXT * following
    ):
        return None
    return float(levels[order[0]])


def fit_transform(rows: np.ndarray, schema: Schema, *, categorical: str, seed: int) -> TransformParams:
    """Fit on training rows (float32 codes, NaN = missing). `categorical` is "onehot" or "ordinal"."""
    if categorical not in ("onehot", "ordinal"):
        raise ValueError(f"categorical encoding must be 'onehot' or 'ordinal', got {categorical!r}")
    rng = np.random.default_rng(seed)
    n_knots = int(np.clip(len(rows) // ROWS_PER_KNOT, MIN_KNOTS, MAX_KNOTS))
    scalar, discrete, xs, zs, lower, upper, onehot, sizes = [], [], [], [], [], [], [], []
    atoms: list[tuple[int, float]] = []
    for j, col in enumerate(schema.columns):
        values = rows[:, j].astype(np.float64)
        values = values[~np.isnan(values)]
        if col.kind == "categorical" and categorical == "onehot":
            assert col.categories is not None
            onehot.append(j)
            sizes.append(len(col.categories))
            continue
        is_discrete = col.kind != "continuous"
        atom = None if is_discrete else _atom(values)
        if atom is not None:
            atoms.append((j, atom))
        fitted = values if atom is None else values[values != atom]  # the map covers the values off the atom
        x, z = _monotone_knots(fitted + rng.random(len(fitted)) if is_discrete else fitted, n_knots)
        scalar.append(j)
        discrete.append(is_discrete)
        xs.append(x)
        zs.append(z)
        if col.kind == "categorical":
            assert col.categories is not None
            lower.append(0.0)
            upper.append(float(len(col.categories) - 1))
        else:
            lower.append(float(values.min()))
            upper.append(float(values.max()))
    missing = [j for j in range(rows.shape[1]) if np.isnan(rows[:, j]).any()]
    # 0/1 indicators, dequantized like any discrete scalar: missingness, then atoms (a gap is not at the atom).
    indicators = [np.isnan(rows[:, j]) for j in missing] + [rows[:, j] == atom for j, atom in atoms]
    for indicator in indicators:
        x, z = _monotone_knots(indicator + rng.random(len(indicator)), n_knots)
        discrete.append(True)
        xs.append(x)
        zs.append(z)
        lower.append(0.0)
        upper.append(1.0)
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
        tuple(missing),
        tuple(j for j, _ in atoms),
        tuple(atom for _, atom in atoms),
    )


class FeatureCodec(nn.Module):
    """Torch side of the transform, exported inside every graph (parameters are buffers)."""

    discrete: Tensor
    lower: Tensor
    upper: Tensor
    place_scalar: Tensor
    place_codes: Tensor
    place_missing: Tensor
    zero_row: Tensor
    place_atom: Tensor
    atom_values: Tensor
    atom_row: Tensor
    atom_to_value: Tensor

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
        self.forward_map = PiecewiseLinear(x, z)  # original units -> normal scores
        self.inverse_map = PiecewiseLinear(z, x)
        self.register_buffer("lower", torch.as_tensor(params.lower, dtype=torch.float32))
        self.register_buffer("upper", torch.as_tensor(params.upper, dtype=torch.float32))
        # Scatter matrices place scalar and categorical columns back into row order without index_put; the
        # missingness matrix maps row columns to their indicators (and back).
        self.n_values = len(params.scalar_columns)
        self.n_missing = len(params.missing_columns)
        self.register_buffer("place_scalar", _placement(params.scalar_columns, n_columns))
        self.register_buffer("place_codes", _placement(params.onehot_columns, n_columns))
        self.register_buffer("place_missing", _placement(params.missing_columns, n_columns))
        self.register_buffer("zero_row", torch.zeros(1, n_columns))  # [1, D]: rows of zeros for all-one-hot tables
        self.n_atoms = len(params.atom_columns)
        if self.n_atoms:  # only then: models of tables without atoms keep their buffers and graphs
            place_atom = _placement(params.atom_columns, n_columns)
            self.register_buffer("place_atom", place_atom)  # [A, D]
            self.register_buffer("atom_values", torch.tensor(params.atom_values, dtype=torch.float32))  # [A]
            self.register_buffer("atom_row", torch.tensor(params.atom_values, dtype=torch.float32) @ place_atom)
            # [A, S]: an atom indicator to its column's value scalar, which a row at the atom fills like a gap
            self.register_buffer("atom_to_value", place_atom @ _placement(params.scalar_columns, n_columns).T)

    @property
    def draws_fills(self) -> bool:
        """Some value scalar can be a gap or at an atom: training draws its model-space value (`to_model`'s fill)."""
        return bool(self.n_missing or self.n_atoms)

    def to_model(
        self, rows: Tensor, dequant: Tensor | None = None, fill: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """rows [B, D] (NaN = missing) -> (scalar z [B, S + M + A], log|dz/dx| [B], one-hot [B, sum K]).

        `dequant` [B, S + M + A] in [0, 1) is added to discrete scalars (training); None uses the midpoint 0.5.
        `fill` [B, S + M + A] is the model-space value of a gap or atom (training: N(0, 1) draws); None uses 0,
        the median.
        """
        # One-hot blocks compare the raw rows: a gap (NaN) equals no code, so its block is all zeros.
        blocks = [
            (rows[:, j : j + 1] == torch.arange(k, device=rows.device, dtype=rows.dtype)).to(rows.dtype)
            for j, k in zip(self.onehot_positions, self.onehot_sizes)
        ]
        onehot = torch.cat(blocks, dim=1) if blocks else rows[:, :0]
        if self.n_scalar == 0:  # all-categorical tables: no zero-width tensors in the exported graph
            return rows[:, :0], torch.zeros_like(rows[:, 0]), onehot
        gaps = torch.isnan(rows)
        clean = torch.where(gaps, torch.zeros_like(rows), rows)
        # The scalar columns, exactly (a Gemm; indexing exports as GatherND); NaN would spread through it.
        parts, gap_parts = [], []
        if self.n_values:
            parts.append(clean @ self.place_scalar.T)
            gap_parts.append(gaps.to(rows.dtype) @ self.place_scalar.T)
        if self.n_missing:
            indicators = gaps.to(rows.dtype) @ self.place_missing.T
            parts.append(indicators)
            gap_parts.append(torch.zeros_like(indicators))
        if self.n_atoms:
            present = (gaps.to(rows.dtype) @ self.place_atom.T) < 0.5
            at_atom = ((clean @ self.place_atom.T == self.atom_values) & present).to(rows.dtype)  # [B, A]
            parts.append(at_atom)
            gap_parts.append(torch.zeros_like(at_atom))
            gap_parts[0] = gap_parts[0] + at_atom @ self.atom_to_value  # atom columns are value scalars
        x = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        gap = torch.cat(gap_parts, dim=1) if len(gap_parts) > 1 else gap_parts[0]
        offset = torch.full_like(x, 0.5) if dequant is None else dequant
        x = x + offset * self.discrete.to(x.dtype)
        z, slope = self.forward_map(x)
        is_gap = gap > 0.5
        z = torch.where(is_gap, torch.zeros_like(z) if fill is None else fill, z)
        log_slope = torch.where(is_gap, torch.zeros_like(slope), torch.log(slope))
        return z, log_slope.sum(-1), onehot

    def from_model(self, z: Tensor, codes: Tensor | None) -> Tensor:
        """(scalar z [B, S + M + A], category codes [B, n_onehot] as float) -> rows [B, D] in original units, every
        value within its training range, the atom's value where an atom indicator is 1, NaN where a missingness
        indicator is 1."""
        if self.n_scalar == 0:
            assert codes is not None
            return codes @ self.place_codes
        x, _ = self.inverse_map(z)
        x = torch.minimum(torch.maximum(x, self.lower), self.upper)
        x = torch.where(self.discrete, torch.floor(x), x)  # floor keeps a discrete value within its range
        rows = (
            x[:, : self.n_values] @ self.place_scalar if self.n_values else torch.zeros_like(x[:, :1]) @ self.zero_row
        )
        if codes is not None and self.place_codes.shape[0] > 0:
            rows = rows + codes @ self.place_codes
        if self.n_atoms:
            start = self.n_values + self.n_missing
            at_atom = x[:, start : start + self.n_atoms] @ self.place_atom  # [B, D], 1 where the value is the atom
            rows = torch.where(at_atom > 0.5, self.atom_row, rows)
        if self.n_missing:
            missing = x[:, self.n_values : self.n_values + self.n_missing] @ self.place_missing  # [B, D]
            rows = torch.where(missing > 0.5, torch.full_like(rows, math.nan), rows)
        return rows


def _placement(positions: tuple[int, ...], n_columns: int) -> Tensor:
    """[len(positions), n_columns] 0/1: row i selects column positions[i] (x @ P.T gathers, y @ P scatters)."""
    place = torch.zeros(len(positions), n_columns)
    for i, j in enumerate(positions):
        place[i, j] = 1.0
    return place
