"""pandas columns <-> the numbers graphs and the wire carry, for both sides of the contract.

`values_from_series` turns a caller's column (labels, datetimes or ISO strings, numbers, gaps) into float64
numbers (NaN = missing); `series_from_values` turns finished values (`values.finish_rows`, or a Table column)
back into the training data's labels, dtype and datetime format. Training encodes its rows and decodes its
samples with these; the Python client does the same for the wire. Unlike the rest of the contract this
module needs pandas, so the package does not import it: import `synthserve.contract.frames` where needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from synthserve.contract.levels import level_codes
from synthserve.contract.manifest import Column
from synthserve.contract.values import MISSING_CODE, from_datetime64, to_datetime64

__all__ = ["label_codes", "series_from_values", "values_from_series"]


def label_codes(series: pd.Series, labels: Sequence[Any], field: str, *, allow_missing: bool) -> np.ndarray:
    """Labels -> float64 codes into `labels` (NaN for a gap when `allow_missing`); ValueError naming the field."""
    missing = series.isna().to_numpy()
    if missing.any() and not allow_missing:
        raise ValueError(
            f"column {field!r}: {int(missing.sum())} missing value(s); it takes one of {list(labels)[:10]}"
        )
    return level_codes(list(series.to_numpy(dtype=object)), labels, f"column {field!r}", missing.tolist())


def values_from_series(column: Column, series: pd.Series) -> np.ndarray:
    """A caller's column -> float64 numbers for the graphs (codes, datetime units), NaN where missing."""
    if column.kind == "categorical":
        assert column.categories is not None
        return label_codes(series, column.categories, column.name, allow_missing=True)
    if column.datetime_unit is not None:
        try:
            stamps = pd.to_datetime(series, format=column.datetime_format or "ISO8601")
        except (ValueError, TypeError) as exc:
            expected = column.datetime_format or "ISO 8601"
            raise ValueError(f"column {column.name!r}: not datetimes in the format {expected!r} ({exc})") from None
        if getattr(stamps.dt, "tz", None) is not None:
            stamps = stamps.dt.tz_convert("UTC").dt.tz_localize(None)
        return from_datetime64(column, stamps.to_numpy(dtype="datetime64[ns]"))
    try:
        return pd.to_numeric(series, errors="raise").to_numpy(dtype=np.float64, na_value=np.nan)
    except (ValueError, TypeError):
        bad = pd.to_numeric(series, errors="coerce").isna() & series.notna()
        raise ValueError(
            f"column {column.name!r}: value {series[bad].iloc[0]!r} is not a number ({column.kind} column)"
        ) from None


def series_from_values(column: Column, values: np.ndarray) -> Any:
    """Finished values of one column (codes with -1 for gaps, numbers with NaN) -> the training data's values."""
    if column.kind == "categorical":
        assert column.categories is not None
        codes = np.asarray(values).astype(np.int64)
        labels = np.asarray(column.categories, dtype=object)[np.clip(codes, 0, None)]
        missing = codes == MISSING_CODE
        if column.dtype in ("object", "category", "string", "str"):
            labels[missing] = None
            return labels
        if missing.any():
            labels[missing] = np.nan
            return _as_dtype(labels.astype(np.float64), column.dtype)
        return _as_dtype(labels, column.dtype)
    if column.datetime_unit is not None:
        stamps = to_datetime64(column, values)
        if column.datetime_format is None:
            return stamps
        text = pd.Series(stamps).dt.strftime(column.datetime_format).to_numpy(dtype=object)
        text[np.isnat(stamps)] = None
        return text
    return _as_dtype(np.asarray(values), column.dtype)


def _as_dtype(values: np.ndarray, dtype: str) -> Any:
    if values.dtype.kind == "f" and np.isnan(values).any() and dtype.startswith(("int", "uint", "bool")):
        nullable = "boolean" if dtype.startswith("bool") else "Int64"
        return pd.array([None if np.isnan(v) else v for v in values.tolist()], dtype=nullable)
    try:
        return values.astype(dtype)
    except (TypeError, ValueError):
        return values
