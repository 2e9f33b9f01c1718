"""Generated rows are judged as the server sends them."""

from __future__ import annotations

import numpy as np

from synthserve.contract import Column, Schema
from training.features import served_rows


def test_generated_rows_are_judged_asserved_rows() -> None:
    """Clipped to the training range, whole numbers and decimals rounded, a category gap (-1) back to NaN; float32
    like the encoded real rows, so a served 1.2 equals a real 1.2."""
    schema = Schema(
        (
            Column("x", "continuous", "float64", min=0.0, max=5.0, decimals=1),
            Column("n", "integer", "int64", min=0.0, max=9.0),
            Column("c", "categorical", "object", categories=("a", "b"), missing_rate=0.2),
        )
    )
    rows = np.array([[7.26, 2.6, np.nan], [1.234, -3.0, 1.0]], dtype=np.float32)
    expected = np.array([[5.0, 3.0, np.nan], [1.2, 0.0, 1.0]], dtype=np.float32)
    np.testing.assert_array_equal(served_rows(rows, schema), expected)
