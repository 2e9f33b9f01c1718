"""Monotone piecewise-linear maps evaluated inside exported graphs: the feature transform's building block.

`torch.searchsorted` does not export to ONNX, so finding a value's segment is done with gathers over a uniform grid
and a short binary search (see `PiecewiseLinear`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["GRID_CELLS", "GRID_MAX_ENTRIES", "PiecewiseLinear"]


def _take(values: Tensor, index: Tensor) -> Tensor:
    """values [N, ...], index [B, S] int64 -> values[index] [B, S, ...]: one ONNX Gather, no GatherND or transposes."""
    return values.index_select(0, index.reshape(-1)).reshape(*index.shape, *values.shape[1:])


def _cells(x: Tensor, origin: Tensor, scale: Tensor, n_cells: int) -> Tensor:
    """Grid cell of each value, x [B, S] -> [B, S] int64 in [0, n_cells). Monotone in x: float32 subtraction and
    multiplication round monotonically, floor and clip are monotone (NaN goes to cell 0)."""
    scaled = (x - origin) * scale
    scaled = torch.where(torch.isnan(scaled), torch.zeros_like(scaled), scaled)
    return torch.clamp(torch.floor(scaled), 0, n_cells - 1).long()


# Grid sizes tried per map: the fewest search steps wins, then the smallest table; a map's table holds at most
# GRID_MAX_ENTRIES cells over all its columns (it ships in every graph file).
GRID_CELLS = (16, 32, 64, 128, 256, 512, 1024)
GRID_MAX_ENTRIES = 16_384


def _grid(inner: Tensor, origin: Tensor, span: Tensor, n_cells: int) -> tuple[Tensor, np.ndarray]:
    """(scale [S, 1], interior knots per cell [S, n_cells]) of `n_cells` cells over each column's interior knots."""
    scale = torch.where(span > 0, n_cells / span, torch.zeros_like(span))
    cells = _cells(inner, origin, scale, n_cells).numpy()
    counts = np.zeros((len(cells), n_cells), dtype=np.int64)
    for column, column_cells in enumerate(cells):
        counts[column] = np.bincount(column_cells, minlength=n_cells)
    return scale, counts


class PiecewiseLinear(nn.Module):
    """Column-wise monotone piecewise-linear maps through knots (in [S, K] -> out [S, K]), linear beyond the ends.

    x lies in segment s (0 <= s <= K-2) when exactly s interior knots are <= x. That count comes from a uniform
    grid over each column's interior knots: the knots in cells below x's cell are all <= x and those above all
    > x, because the grid cell is computed by the same float32 ops when the grid is built and in the graph and
    those ops are monotone; a binary search over the few knots sharing x's cell finishes the count exactly.
    Per value: one gather for the cell, `n_steps` (usually 1-2) for the search, one for the segment's
    (start in, start out, slope). `torch.searchsorted` does not export to ONNX; comparing x with every knot costs
    K elements per value (half of a sampling graph's time), a plain binary search log2(K) gathers and graph
    nodes, which a one-row run pays for node by node.
    """

    origin: Tensor
    scale: Tensor
    starts: Tensor
    knots: Tensor
    segments: Tensor

    def __init__(self, knots_in: Tensor, knots_out: Tensor) -> None:
        super().__init__()
        n_columns, n_knots = knots_in.shape
        inner = knots_in[:, 1:-1]  # [S, n]
        n_inner = inner.shape[1]
        origin = inner[:, :1] if n_inner else torch.zeros(n_columns, 1)
        span = (inner[:, -1:] - origin) if n_inner > 1 else torch.zeros(n_columns, 1)
        allowed = [n for n in GRID_CELLS if n * n_columns <= GRID_MAX_ENTRIES] or [GRID_CELLS[0]]
        grids = {n_cells: _grid(inner, origin, span, n_cells) for n_cells in allowed}
        self.n_cells = min(grids, key=lambda n_cells: (int(grids[n_cells][1].max(initial=0)).bit_length(), n_cells))
        scale, counts = grids[self.n_cells]
        self.n_steps = int(counts.max(initial=0)).bit_length()
        width = max(n_inner + 2**self.n_steps - 1, n_knots - 1)  # per column: search window and segment rows
        starts = np.cumsum(counts, axis=1) - counts + np.arange(n_columns)[:, None] * width  # [S, G]
        knots = torch.full((n_columns, width), math.inf)
        knots[:, :n_inner] = inner
        slope = (knots_out[:, 1:] - knots_out[:, :-1]) / (knots_in[:, 1:] - knots_in[:, :-1])
        segments = torch.stack([knots_in[:, :-1], knots_out[:, :-1], slope], dim=-1)  # [S, K-1, 3]
        # Counts past the last interior knot (x = +inf passes the +inf padding) land on copies of the last segment.
        segments = torch.cat([segments, segments[:, -1:].expand(-1, width - (n_knots - 1), -1)], dim=1)
        self.register_buffer("origin", origin.reshape(-1))
        self.register_buffer("scale", scale.reshape(-1))
        # int32 in model.pt (half the bytes of the widest table); the ONNX exporter folds the cast to int64.
        self.register_buffer("starts", torch.as_tensor(starts.reshape(-1), dtype=torch.int32))
        self.register_buffer("knots", knots.reshape(-1))
        self.register_buffer("segments", segments.reshape(-1, 3))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x [B, S] -> (y [B, S], dy/dx [B, S])."""
        column = torch.arange(x.shape[1], device=x.device)
        cell = _cells(x, self.origin, self.scale, self.n_cells) + column * self.n_cells
        position = _take(self.starts.long(), cell)
        for step in (2**i for i in reversed(range(self.n_steps))):
            passed = (_take(self.knots, position + (step - 1)) <= x).long()
            position = position + (passed * step if step > 1 else passed)
        start_in, start_out, slope = _take(self.segments, position).unbind(-1)
        return start_out + slope * (x - start_in), slope
