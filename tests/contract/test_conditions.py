"""Feature conditions: checked against the schema with errors naming the condition, tested on served values, and
a search whose rows do not depend on how candidates are computed."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

from synthserve.contract import (
    MAX_CONDITIONS,
    CandidateSearch,
    Column,
    LabelRuns,
    RareCondition,
    RequestError,
    SamplingOptions,
    UnsupportedRequest,
    condition_seed,
    resolve_conditions,
    sample_conditioned_rows,
    sample_feeds,
    shorthand_conditions,
)
from tests.contract.test_manifest import make_manifest

MANIFEST = make_manifest()
SCHEMA = dataclasses.replace(
    MANIFEST.schema,
    columns=(
        *MANIFEST.schema.columns,
        Column("visits", "integer", "int64", min=0.0, max=20.0),
        Column("grade", "categorical", "int64", categories=(1, 2, 3)),
        Column("day", "integer", "int64", min=0.0, max=400.0, datetime_unit="D", datetime_origin="2024-01-01"),
    ),
)
WIDE = dataclasses.replace(MANIFEST, schema=SCHEMA)


def test_each_column_kind_takes_its_tests() -> None:
    conditions = resolve_conditions(
        WIDE,
        [
            {"column": "color", "equals": "blue"},
            {"column": "grade", "equals": 2.0},  # labels compare as text: 2.0 is the category 2
            {"column": "visits", "equals": "3"},  # text that spells a number, as a command line gives it
            {"column": "visits", "low": 1, "high": 5},
            {"column": "x", "low": -0.5, "high": 0.25},
            {"column": "grade", "low": 1.5, "high": 3},  # numeric category labels: the codes of 2 and 3
        ],
    )
    assert [c.text for c in conditions] == [
        "color == blue",
        "grade == 2",
        "visits == 3",
        "1 <= visits <= 5",
        "-0.5 <= x <= 0.25",
        "1.5 <= grade <= 3",
    ]
    assert [c.index for c in conditions] == [1, 3, 2, 2, 0, 3]
    assert conditions[0].allowed == (1.0,) and conditions[1].allowed == (1.0,)  # category codes
    assert conditions[5].allowed == (1.0, 2.0) and conditions[5].mask(np.array([0, 1, 2, -1])).tolist() == [
        False,
        True,
        True,
        False,
    ]
    values = np.array([-0.5, 0.25, 0.3, np.nan])
    assert conditions[4].mask(values).tolist() == [True, True, False, False]  # closed; a gap meets no range


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        ({"column": "colour", "equals": "red"}, "conditions[0].column: no column 'colour' in model 'toy'"),
        ({"column": "x", "equals": 1.0}, "equality applies to categorical and integer columns; 'x' is continuous"),
        ({"column": "color", "low": 0, "high": 1}, "'color' is categorical with labels that are not numbers"),
        ({"column": "visits", "equals": 2.5}, "conditions[0].equals: 'visits' holds whole numbers, got 2.5"),
        ({"column": "visits", "equals": "three"}, "conditions[0].equals: expected a whole number, got 'three'"),
        ({"column": "visits", "equals": True}, "expected a number, got True"),
        ({"column": "x", "low": 1.0}, "conditions[0].range.high: expected a number, got None"),
        ({"column": "x", "low": float("inf"), "high": 2.0}, "conditions[0].range.low: expected a finite number"),
        ({"column": "x", "low": 1.0, "high": 0.0}, "conditions[0].range: low 1 is above high 0"),
        ({"column": "color", "equals": "bleu"}, "'bleu' is not a category of 'color'"),
        ({"column": "day", "low": 0, "high": 5}, "'day' is a datetime column"),
        ({"column": "x"}, "conditions[0]: give equals or range"),
    ],
)
def test_a_bad_condition_is_refused_naming_it(condition: dict[str, object], message: str) -> None:
    with pytest.raises(RequestError, match=re.escape(message)):
        resolve_conditions(WIDE, [condition])


def test_too_many_conditions_and_image_models_are_refused() -> None:
    many = [{"column": "x", "low": 0, "high": 1}] * (MAX_CONDITIONS + 1)
    with pytest.raises(RequestError, match=f"{MAX_CONDITIONS + 1} conditions, at most {MAX_CONDITIONS}"):
        resolve_conditions(WIDE, many)
    images = dataclasses.replace(MANIFEST, schema=dataclasses.replace(MANIFEST.schema, image_shape=(1, 2)))
    with pytest.raises(UnsupportedRequest, match="generates images"):
        resolve_conditions(images, [{"column": "x", "low": 0, "high": 1}])


def _toy_graph(graph: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The toy manifest's sample graph: x = z0 + label, color = (z1 > 0)."""
    z, label = feeds["z"], feeds["label"]
    return [np.stack([z[:, 0] + label, (z[:, 1] > 0).astype(np.float32)], axis=1).astype(np.float32)]


def test_the_search_keeps_the_first_candidates_whatever_the_block_size() -> None:
    conditions = resolve_conditions(
        MANIFEST, [{"column": "color", "equals": "blue"}, {"column": "x", "low": 0.0, "high": 1.0}]
    )
    runs = LabelRuns((0, 1), (40, 25))
    results = [
        sample_conditioned_rows(
            MANIFEST.graphs, _toy_graph, MANIFEST.schema, 5, runs, 65, conditions, SamplingOptions(), 10_000, block
        )
        for block in (64, 100, 4096)
    ]
    for rows, labels in results[1:]:
        np.testing.assert_array_equal(rows, results[0][0])
        assert labels is not None and (labels == results[0][1]).all()
    rows, labels = results[0]
    assert rows.shape == (65, 2) and labels is not None and labels.tolist() == [0] * 40 + [1] * 25
    assert (rows[:, 1] == 1).all() and ((rows[:, 0] >= 0) & (rows[:, 0] <= 1)).all()
    # Class 1's rows: its candidates under condition_seed(5, 1), filtered, in order.
    spec = MANIFEST.graphs["sample"]
    feeds = sample_feeds(spec, condition_seed(5, 1), 0, 1000, SamplingOptions(), np.ones(1000, dtype=np.int64))
    (candidates,) = _toy_graph("sample", feeds)
    keep = (candidates[:, 1] == 1) & (candidates[:, 0] >= -1.0) & (candidates[:, 0] <= 1.0)
    keep &= candidates[:, 0] >= 0.0
    np.testing.assert_array_equal(rows[40:], np.clip(candidates[keep][:25], -1.0, 2.0))


def test_a_spent_budget_names_the_rarest_condition() -> None:
    conditions = resolve_conditions(
        MANIFEST, [{"column": "color", "equals": "blue"}, {"column": "x", "low": 1.9, "high": 2.0}]
    )
    search = CandidateSearch(MANIFEST.schema, conditions, needed=500, budget=300, max_block=128, what="of class '0'")
    blocks = []
    with pytest.raises(
        RareCondition,
        match=r"of class '0' met them, 500 needed, within the budget of 300 .* the rarest, 1.9 <= x <= 2, alone keeps",
    ):
        while not search.done:
            size = search.next_block()
            blocks.append(size)
            rows = np.column_stack([np.linspace(-1, 2, size), np.ones(size)]).astype(np.float32)
            search.add(rows)
    assert sum(blocks) == 300 and max(blocks) <= 128


def test_the_shorthand_of_the_client_and_the_torchserve_handler() -> None:
    assert shorthand_conditions({"color": "blue", "x": (0, 1), "visits": [1, 5]}) == (
        {"column": "color", "equals": "blue"},
        {"column": "x", "low": 0, "high": 1},
        {"column": "visits", "low": 1, "high": 5},
    )
    with pytest.raises(RequestError, match=re.escape("conditions['x']: a range is [low, high], got [1, 2, 3]")):
        shorthand_conditions({"x": [1, 2, 3]})
    with pytest.raises(RequestError, match=re.escape("conditions['x']: must be a value or [low, high], got None")):
        shorthand_conditions({"x": None})
    with pytest.raises(RequestError, match="conditions: must be an object mapping column names"):
        shorthand_conditions([("x", 1)])
