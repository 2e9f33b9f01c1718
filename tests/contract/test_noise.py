"""The noise rule: row i depends only on (seed, stream, i), for every split of a request."""

from __future__ import annotations

import numpy as np
import pytest

from synthserve.contract.noise import UNIFORM_EPS, draw_noise, noise_row_width


@pytest.mark.parametrize("distribution", ["normal", "uniform"])
@pytest.mark.parametrize("row_shape", [(1,), (3,), (4, 5)])
def test_any_split_gives_the_same_rows(distribution: str, row_shape: tuple[int, ...]) -> None:
    whole = draw_noise(123, 0, 0, 50, row_shape, distribution)
    pieces = [draw_noise(123, 0, a, b - a, row_shape, distribution) for a, b in [(0, 1), (1, 8), (8, 33), (33, 50)]]
    assert whole.shape == (50, *row_shape)
    assert whole.dtype == np.float32
    np.testing.assert_array_equal(whole, np.concatenate(pieces))


def test_streams_and_seeds_are_independent() -> None:
    a = draw_noise(1, 0, 0, 100, (8,), "normal")
    assert not np.array_equal(a, draw_noise(1, 1, 0, 100, (8,), "normal"))
    assert not np.array_equal(a, draw_noise(2, 0, 0, 100, (8,), "normal"))
    np.testing.assert_array_equal(a, draw_noise(1, 0, 0, 100, (8,), "normal"))


def test_normal_moments_and_uniform_range() -> None:
    z = draw_noise(7, 0, 0, 200_000, (3,), "normal").astype(np.float64)
    assert abs(z.mean()) < 0.01
    assert abs(z.std() - 1.0) < 0.01
    # odd widths drop the unused half of the last Box-Muller pair, yet stay standard normal
    assert abs(np.mean(z[:, 2] ** 4) - 3.0) < 0.1
    u = draw_noise(7, 0, 0, 200_000, (2,), "uniform")
    assert u.min() >= UNIFORM_EPS
    assert u.max() <= 1.0 - UNIFORM_EPS
    assert abs(float(u.mean()) - 0.5) < 0.01


def test_large_offsets_are_cheap_and_consistent() -> None:
    row = draw_noise(9, 2, 10_000_000, 1, (16,), "normal")
    assert row.shape == (1, 16)
    assert np.isfinite(row).all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"seed": -1}, "seed"),
        ({"seed": 2**64}, "seed"),
        ({"start_row": -1}, "start_row"),
        ({"distribution": "cauchy"}, "distribution"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {
        "seed": 0,
        "stream": 0,
        "start_row": 0,
        "n_rows": 2,
        "row_shape": (2,),
        "distribution": "normal",
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        draw_noise(**args)  # type: ignore[arg-type]


def test_row_width_rounds_normals_to_pairs() -> None:
    assert noise_row_width((3,), "normal") == 4
    assert noise_row_width((64, 5), "normal") == 320
    assert noise_row_width((3,), "uniform") == 3
