"""The label layout rules of docs/model_store.md: exact counts by largest remainder, runs sliced anywhere."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from serving.engine import LabelRuns


@given(counts=st.lists(st.integers(0, 50), min_size=1, max_size=6), cuts=st.lists(st.integers(0, 300), max_size=5))
def test_label_runs_slices_concatenate_to_the_whole(counts: list[int], cuts: list[int]) -> None:
    runs = LabelRuns(tuple(range(len(counts))), tuple(counts))
    whole = np.repeat(np.arange(len(counts)), counts)
    bounds = sorted({0, len(whole), *(c for c in cuts if c < len(whole))})
    pieces = [runs.slice(a, b) for a, b in itertools.pairwise(bounds)]
    np.testing.assert_array_equal(np.concatenate(pieces) if pieces else np.empty(0, np.int64), whole)
