"""Counter-based noise: row `i` of a request depends only on (seed, stream, i).

Each noise input `j` of a graph (in manifest order) owns one PCG64 stream,
`PCG64(SeedSequence(seed, spawn_key=(j,)))`. Row `i` consumes a fixed number of uniform draws
(`noise_row_width`) starting at draw `i * width`, reached with `PCG64.advance` in O(1). Normals come from
Box-Muller on those uniforms (a fixed two draws per normal pair; numpy's ziggurat consumes a variable
number and could not be positioned). So any split of a request into batches, chunks or streams yields
the same noise, and drawing rows [a, b) costs O(b - a) time and memory whatever `a` is.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.random import PCG64, Generator, SeedSequence

__all__ = ["DISTRIBUTIONS", "UNIFORM_EPS", "draw_noise", "noise_row_width"]

DISTRIBUTIONS = ("normal", "uniform")

# Uniform noise is clipped to [UNIFORM_EPS, 1 - UNIFORM_EPS] after the float32 cast, so that
# log(u) and log(-log(u)) (Gumbel-max sampling inside graphs) are always finite.
UNIFORM_EPS = float(2.0**-24)


def noise_row_width(row_shape: tuple[int, ...], distribution: str) -> int:
    """Uniform draws one row consumes: the row's element count, rounded up to even for normals."""
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"unknown noise distribution {distribution!r}; expected one of {DISTRIBUTIONS}")
    width = math.prod(row_shape)
    if distribution == "normal":
        width += width % 2
    return width


def draw_noise(
    seed: int,
    stream: int,
    start_row: int,
    n_rows: int,
    row_shape: tuple[int, ...],
    distribution: str,
) -> np.ndarray:
    """Noise rows [start_row, start_row + n_rows) of `stream` under `seed`, float32, shape (n_rows, *row_shape)."""
    if seed < 0 or seed >= 2**64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    if start_row < 0 or n_rows < 0:
        raise ValueError(f"start_row and n_rows must be >= 0, got {start_row}, {n_rows}")
    width = noise_row_width(row_shape, distribution)
    elements = math.prod(row_shape)
    bit_generator = PCG64(SeedSequence(seed, spawn_key=(stream,)))
    if start_row:
        bit_generator.advance(start_row * width)
    uniforms = Generator(bit_generator).random(n_rows * width).reshape(n_rows, width)
    if distribution == "uniform":
        values = np.clip(uniforms.astype(np.float32), UNIFORM_EPS, 1.0 - UNIFORM_EPS)
    else:
        # Box-Muller: 1 - u lies in (0, 1], so the log is finite.
        radius = np.sqrt(-2.0 * np.log1p(-uniforms[:, 0::2]))
        angle = (2.0 * np.pi) * uniforms[:, 1::2]
        values = np.empty((n_rows, width), dtype=np.float32)
        values[:, 0::2] = radius * np.cos(angle)
        values[:, 1::2] = radius * np.sin(angle)
        values = values[:, :elements]
    return np.ascontiguousarray(values).reshape((n_rows, *row_shape))
