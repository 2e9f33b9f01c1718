"""How a request's rows are divided among classes: largest-remainder counts, label runs, class lookup, label
conditions and Balance counts."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from synthserve.contract import Manifest, RequestError, Schema, UnsupportedRequest
from synthserve.contract.labels import LabelRuns, balance_counts, class_index, largest_remainder, plan_labels
from tests.contract.test_manifest import make_manifest


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


@given(counts=st.lists(st.integers(0, 50), min_size=1, max_size=6), cuts=st.lists(st.integers(0, 300), max_size=5))
def test_label_runs_slices_concatenate_to_the_whole(counts: list[int], cuts: list[int]) -> None:
    runs = LabelRuns(tuple(range(len(counts))), tuple(counts))
    whole = np.repeat(np.arange(len(counts)), counts)
    bounds = sorted({0, len(whole), *(c for c in cuts if c < len(whole))})
    pieces = [runs.slice(a, b) for a, b in itertools.pairwise(bounds)]
    np.testing.assert_array_equal(np.concatenate(pieces) if pieces else np.empty(0, np.int64), whole)
    assert runs.n_rows == len(whole)


def _unconditional() -> Manifest:
    return dataclasses.replace(make_manifest(), schema=Schema(make_manifest().schema.columns))


def test_class_index_compares_text_and_names_the_field_and_classes() -> None:
    manifest = make_manifest()  # classes 0 and 1 (int64)
    assert class_index(manifest, "1", "label") == 1
    with pytest.raises(RequestError, match=r"class_counts: unknown class label '2' \(classes: \['0', '1'\]\)"):
        class_index(manifest, "2", "class_counts")
    with pytest.raises(RequestError, match="label: model 'toy' is unconditional"):
        class_index(_unconditional(), "0", "label")


def test_plan_labels_one_label_proportions_or_the_priors() -> None:
    manifest = make_manifest()  # priors 0.9 / 0.1
    assert plan_labels(manifest, 10, None, None) == LabelRuns((0, 1), (9, 1))
    assert plan_labels(manifest, 4, "1", None) == LabelRuns((1,), (4,))
    assert plan_labels(manifest, 5, None, {"0": 1.0, "1": 4.0}) == LabelRuns((0, 1), (1, 4))
    assert plan_labels(manifest, 3, None, {"1": 1e308, "0": 1e308}) == LabelRuns((0, 1), (2, 1))  # no overflow
    assert plan_labels(_unconditional(), 3, None, None) is None


@pytest.mark.parametrize(
    ("label", "proportions", "message"),
    [
        (None, {"0": -1.0}, r"proportions.weights\['0'\] must be a finite number >= 0, got -1.0"),
        (None, {"0": float("nan")}, r"proportions.weights\['0'\] must be a finite number >= 0"),
        (None, {"0": 0.0}, "proportions.weights must have a positive sum"),
        (None, {"7": 1.0}, "proportions.weights: unknown class label '7'"),
        ("7", None, "label: unknown class label '7'"),
    ],
)
def test_plan_labels_refuses_bad_conditions(
    label: str | None, proportions: dict[str, float] | None, message: str
) -> None:
    with pytest.raises(RequestError, match=message):
        plan_labels(make_manifest(), 3, label, proportions, "proportions.weights")
    with pytest.raises(RequestError, match="label/proportions: model 'toy' is unconditional"):
        plan_labels(_unconditional(), 3, "0", None)


def test_balance_counts_for_each_strategy_in_exact_integers() -> None:
    manifest = make_manifest()
    have = {"0": 90, "1": 7}
    assert balance_counts(manifest, "match_majority", have).counts == (0, 83)
    assert balance_counts(manifest, "target_ratio", have, target_ratio=0.1).counts == (0, 2)  # ceil(9) - 7
    assert balance_counts(manifest, "explicit_counts", have, explicit_counts={"1": 5}).counts == (0, 5)
    huge = 2**63 - 1
    assert balance_counts(manifest, "match_majority", {"0": huge, "1": 0}).counts == (0, huge)  # no wrap
    assert balance_counts(manifest, "target_ratio", {"0": 10**18}, target_ratio=0.3).counts == (0, 3 * 10**17)


@pytest.mark.parametrize(
    ("strategy", "kwargs", "message"),
    [
        ("match_majority", {"class_counts": {"0": -1}}, r"class_counts\['0'\] must be >= 0, got -1"),
        ("target_ratio", {"target_ratio": 1.5}, r"target_ratio must be in \(0, 1\], got 1.5"),
        ("target_ratio", {"target_ratio": 0.0}, r"target_ratio must be in \(0, 1\], got 0.0"),
        ("explicit_counts", {"explicit_counts": {"1": -2}}, r"explicit_counts\['1'\] must be >= 0, got -2"),
        ("explicit_counts", {"explicit_counts": {"x": 2}}, "explicit_counts: unknown class label 'x'"),
        ("smote", {}, "strategy must be MATCH_MAJORITY, TARGET_RATIO or EXPLICIT_COUNTS, got 'smote'"),
    ],
)
def test_balance_counts_refuses_bad_requests(strategy: str, kwargs: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {"class_counts": {"0": 5, "1": 1}, **kwargs}
    with pytest.raises(RequestError, match=message):
        balance_counts(make_manifest(), strategy, **arguments)


def test_balance_needs_a_conditional_model() -> None:
    with pytest.raises(UnsupportedRequest, match="model 'toy' is unconditional; Balance needs a class-conditional"):
        balance_counts(_unconditional(), "match_majority", {})
