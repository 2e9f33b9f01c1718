"""The one label rule: text comparison, OTHER_LABEL for unseen values where a column has it, named refusals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from synthserve.contract import OTHER_LABEL, Column, Schema, level_codes
from synthserve.contract.frames import label_codes
from torchserve_handler.codec import rows_from_columns
from torchserve_handler.errors import InvalidRequest


def test_labels_compare_as_text() -> None:
    codes = level_codes([1, 1.0, "1", np.int64(2), 2.0, True], [1, 2, True], "column 'n'")
    np.testing.assert_array_equal(codes, [0, 0, 0, 1, 1, 2])


def test_unseen_values_become_other_only_where_the_column_has_it() -> None:
    np.testing.assert_array_equal(level_codes(["a", "zebra", "b"], ["a", "b", OTHER_LABEL], "x"), [0, 2, 1])
    with pytest.raises(ValueError, match=r"^column 'c': unknown value\(s\) 'rde' \(did you mean 'red'\?\)"):
        level_codes(["rde"], ["red", "green"], "column 'c'")


def test_gaps_are_nan_and_the_pandas_side_is_the_same_rule() -> None:
    np.testing.assert_array_equal(level_codes(["a", None], ["a"], "x", [False, True]), [0, np.nan])
    series = pd.Series(["b", None, "new"])
    np.testing.assert_array_equal(label_codes(series, ["a", "b", OTHER_LABEL], "c", allow_missing=True), [1, np.nan, 2])
    with pytest.raises(ValueError, match=r"column 'c': 1 missing value"):
        label_codes(series, ["a", "b", OTHER_LABEL], "c", allow_missing=False)


def test_the_torchserve_handler_reads_labels_as_the_grpc_client_does() -> None:
    schema = Schema((Column("city", "categorical", "object", categories=("Oslo", "Rome", OTHER_LABEL)),))
    rows = rows_from_columns(schema, {"city": ["Rome", "Lima", None]}, 10)
    np.testing.assert_array_equal(rows[:, 0], [1, 2, np.nan])
    closed = Schema((Column("city", "categorical", "object", categories=("Oslo", "Rome")),))
    with pytest.raises(InvalidRequest, match=r"rows\['city'\]: unknown value\(s\) 'Lima'"):
        rows_from_columns(closed, {"city": ["Lima"]}, 10)
