"""Column kinds as a careful data scientist would infer them, on the tables users bring."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from synthserve.contract import OTHER_LABEL, Column
from training.columns import MAX_CATEGORY_LEVELS, grid_step, infer_column


def _kind(values: list[object] | pd.Series, **options: object) -> tuple[str | None, object]:
    inferred = infer_column("c", pd.Series(values), **options)  # type: ignore[arg-type]
    return (inferred.column.kind if inferred.column else None), inferred


def test_whole_numbers_written_as_floats_are_discrete() -> None:
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 400, 300).astype(float)
    counts[::7] = np.nan  # what pandas writes for an integer column with gaps
    kind, inferred = _kind(pd.Series(counts))
    assert kind == "integer" and inferred.column.dtype == "float64"  # type: ignore[union-attr]
    assert _kind([2.0, 0.0, 1.0, 1.0, np.nan])[0] == "categorical"  # few levels: a code


def test_continuous_columns_learn_their_decimals() -> None:
    rng = np.random.default_rng(1)
    for decimals in (1, 2, 3):
        kind, inferred = _kind(pd.Series(np.round(rng.lognormal(3, 1, 200), decimals)))
        assert kind == "continuous" and inferred.column.decimals == decimals  # type: ignore[union-attr]
    assert _kind(pd.Series(rng.normal(size=200)))[1].column.decimals is None  # type: ignore[union-attr]


def test_grids_are_learned_when_the_values_show_them() -> None:
    rng = np.random.default_rng(2)
    length = Column("length", "continuous", "float64", decimals=3)
    measured = np.round(np.round(rng.normal(0.5, 0.1, 300) / 0.005) * 0.005, 3)  # 0.005 steps, 3 decimals
    assert grid_step(length, measured) == 5
    assert grid_step(length, np.round(rng.normal(0.5, 0.1, 300), 3)) == 1  # every 0.001
    count = Column("count", "integer", "int64")
    assert grid_step(count, 3.0 + 10 * rng.integers(0, 40, 300)) == 10  # 3, 13, 23, ...: min is on the grid
    assert grid_step(count, np.array([2.0, 4.0, 6.0, 8.0, 10.0])) == 1  # 5 even numbers: chance 1 in 16
    assert grid_step(count, 2.0 * np.arange(12)) == 2  # 12 of them: 1 in 2048
    assert grid_step(Column("x", "continuous", "float64"), measured) == 1  # no decimals learned: no grid
    assert grid_step(Column("day", "integer", "object", datetime_unit="D"), 7.0 * np.arange(20)) == 7  # weekly


@pytest.mark.parametrize(
    ("text", "fmt", "unit"),
    [
        (["2024-01-03", "2023-12-31", "2024-02-29"], "%Y-%m-%d", "D"),
        (["2024-01-03 10:00:00", "2024-01-03 11:00:00"], "%Y-%m-%d %H:%M:%S", "h"),
        (["2024-01-03T10:00:15", "2024-01-05T11:00:00"], "%Y-%m-%dT%H:%M:%S", "s"),
        (["31/12/2023", "13/01/2024"], "%d/%m/%Y", "D"),
    ],
)
def test_datetimes_keep_their_format_and_resolution(text: list[str], fmt: str, unit: str) -> None:
    kind, inferred = _kind(text * 10)
    column = inferred.column  # type: ignore[attr-defined]
    assert kind == "integer" and column.datetime_format == fmt and column.datetime_unit == unit
    assert np.datetime64(column.datetime_origin) <= np.datetime64(pd.to_datetime(text, format=fmt).min())


def test_datetime64_columns_are_datetimes() -> None:
    stamps = pd.Series(pd.date_range("2020-01-01", periods=50, freq="6h"))
    kind, inferred = _kind(stamps)
    assert kind == "integer" and inferred.column.datetime_unit == "h"  # type: ignore[union-attr]
    assert inferred.column.datetime_format is None  # type: ignore[union-attr]


def test_identifiers_and_empty_columns_are_left_out_with_a_note() -> None:
    kind, inferred = _kind([f"cust-{i:05d}" for i in range(100)])
    assert kind is None and "identifier" in inferred.note  # type: ignore[operator]
    assert _kind(list(range(1, 101)))[0] is None  # a row counter
    assert _kind(list(np.random.default_rng(0).permutation(1000)[:100] * 7))[0] == "integer"  # a measurement
    assert _kind([np.nan] * 30)[0] is None
    assert _kind([f"cust-{i:05d}" for i in range(100)], kind="categorical")[0] == "categorical"


def test_many_levels_keep_the_frequent_ones_and_an_explicit_rest() -> None:
    rng = np.random.default_rng(2)
    values = [f"zip{v:04d}" for v in rng.zipf(1.2, 3000) % 736]
    kind, inferred = _kind(values)
    column = inferred.column  # type: ignore[attr-defined]
    assert kind == "categorical" and len(column.categories) == MAX_CATEGORY_LEVELS
    assert column.categories[-1] == OTHER_LABEL and "most frequent are kept" in inferred.note  # type: ignore[operator]
    kept = pd.Series(values).value_counts().index[: MAX_CATEGORY_LEVELS - 1]
    assert set(kept) == set(column.categories[:-1])


def test_booleans_and_overrides() -> None:
    assert _kind([True, False, True] * 10)[1].column.categories == (False, True)  # type: ignore[union-attr]
    assert _kind([1.5, 2.5, 3.5] * 10, kind="categorical")[0] == "categorical"
    assert _kind(["1", "2", "30"] * 10, kind="integer")[0] == "integer"
    assert _kind([1.0, 2.0] * 10, kind="drop")[0] is None
    with pytest.raises(ValueError, match="'x' is not a number"):
        _kind(["1", "x"] * 10, kind="continuous")
