"""Largest-remainder class counts."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from synthserve.contract.labels import largest_remainder


@pytest.mark.parametrize(
    ("n_rows", "weights", "expected"),
    [
        (10, [0.5, 0.5], (5, 5)),
        (3, [1, 1], (2, 1)),  # tie goes to the lower class index
        (7, [0.2, 0.3, 0.5], (1, 2, 4)),  # shares 1.4, 2.1, 3.5: the largest remainder (0.5) gets the spare row
        (0, [1, 2], (0, 0)),
        (5, [0, 1], (0, 5)),
        (3, [0.7, 0.3], (2, 1)),  # remainders 0.1 and 0.9: the larger wins
        (1, [1.0, 1.0, 1.0], (1, 0, 0)),
        (100, [1.0, 2.0, 3.0, 4.0], (10, 20, 30, 40)),
    ],
)
def test_counts(n_rows: int, weights: list[float], expected: tuple[int, ...]) -> None:
    assert largest_remainder(n_rows, weights) == expected


@given(st.integers(0, 10**9), st.lists(st.floats(0.001, 1000), min_size=1, max_size=12))
def test_counts_sum_and_stay_within_one_of_the_share(n_rows: int, weights: list[float]) -> None:
    counts = largest_remainder(n_rows, weights)
    assert sum(counts) == n_rows
    total = sum(weights)
    assert all(abs(c - n_rows * w / total) < 1 + 1e-6 for c, w in zip(counts, weights))


@pytest.mark.parametrize("weights", [[], [0, 0], [-1, 2], [float("nan"), 1]])
def test_bad_weights(weights: list[float]) -> None:
    with pytest.raises(ValueError, match="weights"):
        largest_remainder(4, weights)
