"""The contract's rule between graph rows and callers' values: ranges, decimals, gaps, wire types, datetimes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from synthserve.contract import OTHER_LABEL, Column, Schema, accept_column, finish_rows, wire_dtype
from synthserve.contract.frames import label_codes, series_from_values, values_from_series

PRICE = Column("price", "continuous", "float64", min=1.5, max=99.99, decimals=2)
RATIO = Column("ratio", "continuous", "float32", min=0.0, max=1.0)
COUNT = Column("count", "integer", "float64", min=0.0, max=12.0)
GAPPY = Column("gappy", "integer", "int64", min=-3.0, max=3.0, missing_rate=0.1)
CITY = Column("city", "categorical", "object", categories=("a", "b", OTHER_LABEL), missing_rate=0.2)
DAY = Column("day", "integer", "object", min=0.0, max=400.0, missing_rate=0.1, datetime_unit="D",
             datetime_origin="2024-01-01", datetime_format="%Y-%m-%d")  # fmt: skip
SCHEMA = Schema((PRICE, RATIO, COUNT, GAPPY, CITY, DAY))


def test_wire_types() -> None:
    assert [wire_dtype(c).str for c in SCHEMA.columns] == ["<f8", "<f4", "<i4", "<f8", "<i4", "<f8"]
    assert wire_dtype(Column("big", "integer", "int64", min=0.0, max=2.0**40)) == np.dtype("<f8")


def test_finished_rows_stay_in_range_with_their_decimals_and_gaps() -> None:
    rows = np.array(
        [
            [36.8394297, 1.7, 3.4, 2.6, 1.2, 10.4],
            [-50.0, -0.2, 40.0, np.nan, np.nan, 9000.0],
            [150.0, 0.5, -1.0, -9.0, 7.0, -2.0],
        ],
        dtype=np.float32,
    )
    price, ratio, count, gappy, city, day = finish_rows(SCHEMA, rows)
    np.testing.assert_array_equal(price, [36.84, 1.5, 99.99])
    np.testing.assert_array_equal(ratio, np.array([1.0, 0.0, 0.5], np.float32))
    np.testing.assert_array_equal(count, [3, 12, 0])
    np.testing.assert_array_equal(gappy, [3.0, np.nan, -3.0])
    np.testing.assert_array_equal(city, [1, -1, 2])
    np.testing.assert_array_equal(day, [10.0, 400.0, 0.0])


def test_gridded_columns_come_back_on_their_grid() -> None:
    length = Column("length", "continuous", "float64", min=0.075, max=0.815, decimals=3, step=5)
    count = Column("count", "integer", "int64", min=3.0, max=93.0, step=10)
    rows = np.array([[0.4571, 17.9], [0.0701, -4.0], [0.8149, 88.1], [0.46249, 97.0]], dtype=np.float32)
    lengths, counts = finish_rows(Schema((length, count)), rows)
    assert lengths.tolist() == [0.455, 0.075, 0.815, 0.46]  # exactly the decimals a user wrote
    assert counts.tolist() == [13, 3, 93, 93]


def test_accepted_values_mark_gaps_and_refuse_what_float32_cannot_hold() -> None:
    np.testing.assert_array_equal(accept_column(CITY, np.array([0, -1, 2]), "c"), [0.0, np.nan, 2.0])
    np.testing.assert_array_equal(accept_column(PRICE, np.array([1.0, np.nan]), "p"), [1.0, np.nan])
    with pytest.raises(ValueError, match=r"p: 1 value\(s\) are infinite or beyond float32's range"):
        accept_column(PRICE, np.array([1e300, 2.0]), "p")
    with pytest.raises(ValueError, match="category code 3 is out of range"):
        accept_column(CITY, np.array([3]), "c")


def test_frames_round_trip_labels_dates_and_gaps() -> None:
    frame = pd.DataFrame({"city": ["b", None, "zz"], "day": ["2024-01-11", "2025-02-04", None]})
    codes = values_from_series(CITY, frame["city"])
    np.testing.assert_array_equal(codes, [1.0, np.nan, 2.0])  # an unseen level counts as the rest
    days = values_from_series(DAY, frame["day"])
    np.testing.assert_array_equal(days, [10.0, 400.0, np.nan])
    (city, day) = finish_rows(Schema((CITY, DAY)), np.stack([codes, days], 1).astype(np.float32))
    assert list(series_from_values(CITY, city)) == ["b", None, OTHER_LABEL]
    assert list(series_from_values(DAY, day)) == ["2024-01-11", "2025-02-04", None]
    with pytest.raises(ValueError, match=r"column 'label': unknown value.s. 'yse' \(did you mean 'yes'\?\)"):
        label_codes(pd.Series(["yes", "yse"]), ("no", "yes"), "label", allow_missing=False)
    assert list(label_codes(pd.Series([1.0, 0.0]), (0, 1), "label", allow_missing=False)) == [1.0, 0.0]
