"""Column kinds inferred as a careful data scientist would, from the training table itself.

- numbers with at most MAX_CATEGORICAL_LEVELS distinct values are categories (flags, small codes, a
  column of 0.5 and 1.0): a handful of point masses, which a density over a line models badly;
- other numbers whose present values are all whole are discrete whatever their dtype (`2.0, 0.0, 1.0, ...`
  is an integer column);
- other numbers are continuous and keep their learned precision (`decimals`: the fewest decimals that
  write every training value exactly, up to MAX_LEARNED_DECIMALS);
- integer columns and continuous ones with decimals keep their grid (`grid_step`): lengths measured in 0.005 steps
  and written with 3 decimals, or counts in tens, come back on the same grid, once the training values show it;
- booleans and text are categories; a text column of dates or times (ISO 8601 and common day-first or
  month-first forms, one format for the whole column) and datetime64 columns are datetimes, with the
  coarsest unit that holds every value (day, hour, ... microsecond) and the original format for output;
- categories with more than MAX_CATEGORY_LEVELS levels keep the most frequent ones and gather the rest in
  one explicit level, OTHER_LABEL (no invented order, no hundreds of rare levels);
- identifier-like columns (text, or whole numbers forming 0..n-1 / 1..n, with a different value in every
  row) and columns without any value are left out, with a note saying so;
- missing values are kept as gaps (the models learn each column's missingness); `missing_rate` is set by
  `training.data.build_schema` from the training rows.
Every inferred kind can be overridden per column (`KIND_CHOICES`; `drop` leaves a column out).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from synthserve.contract import OTHER_LABEL, Column
from synthserve.contract.manifest import MAX_DECIMALS, MAX_STEP

__all__ = [
    "DATETIME_FORMATS",
    "KIND_CHOICES",
    "MAX_CATEGORICAL_LEVELS",
    "MAX_CATEGORY_LEVELS",
    "OTHER_LABEL",
    "Inferred",
    "grid_step",
    "infer_column",
    "python_value",
]

MAX_CATEGORICAL_LEVELS = 10
MAX_CATEGORY_LEVELS = 64
MAX_LEARNED_DECIMALS = 6
MIN_ROWS_FOR_IDENTIFIER = 20
GRID_EVIDENCE = 1000  # a learned grid step must be this unlikely by chance (see grid_step)
KIND_CHOICES = ("continuous", "integer", "categorical", "datetime", "drop")
# Tried in order; the first that parses every present value and writes each back unchanged is the column's.
DATETIME_FORMATS = (
    "%Y-%m-%d",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%dT%H:%M:%SZ",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M:%S.%f",
    "%Y-%m-%dT%H:%M:%S.%f",
    "%Y/%m/%d",
    "%d/%m/%Y",
    "%m/%d/%Y",
    "%d.%m.%Y",
    "%Y%m%d",
)
# Coarsest first: a datetime column's unit is the first that divides every value's offset from midnight.
_UNITS = (("D", 86_400 * 10**9), ("h", 3_600 * 10**9), ("m", 60 * 10**9), ("s", 10**9), ("ms", 10**6), ("us", 10**3))
_FLOAT32_EXACT = 2**24  # whole numbers up to this are exact in float32, so a datetime's units stay integers


@dataclass(frozen=True)
class Inferred:
    """A column's kind (None: left out) and a note for the user when the choice is not the obvious one."""

    column: Column | None
    note: str | None = None
    # Categorical values gathered into OTHER_LABEL, applied to the rows before encoding.
    other: frozenset[Any] | None = None


def python_value(value: Any) -> Any:
    """numpy scalars -> plain Python, so category labels serialize to JSON."""
    return value.item() if isinstance(value, np.generic) else value


def _sorted_labels(values: pd.Series) -> tuple[Any, ...]:
    return tuple(python_value(v) for v in sorted(values.unique(), key=lambda v: (str(type(v)), v)))


def infer_column(name: str, values: pd.Series, *, image: bool = False, kind: str | None = None) -> Inferred:
    """The kind of one feature column (`kind` overrides the inference; see KIND_CHOICES)."""
    if kind == "drop":
        return Inferred(None, f"column {name!r} left out (--column {name}=drop)")
    present = values.dropna()
    if present.empty:
        return Inferred(None, f"column {name!r} left out: it has no values")
    # Whether (and in which text format) the column holds datetimes, found once: trying the formats parses the
    # whole column up to len(DATETIME_FORMATS) times.
    is_datetime, fmt = _datetime_kind(values, present) if kind in (None, "datetime") else (False, None)
    if kind is None and not image:
        identifier = _identifier_note(name, values, present, is_datetime)
        if identifier is not None:
            return Inferred(None, identifier)
    dtype = str(values.dtype)
    if kind == "datetime" or (kind is None and is_datetime):
        return _datetime_column(name, values, present, fmt)
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if kind in ("continuous", "integer") and not numeric:
        converted = pd.to_numeric(present, errors="coerce")
        if converted.isna().any():
            raise ValueError(f"--column {name}={kind}: value {present[converted.isna()].iloc[0]!r} is not a number")
        present, numeric = converted, True
    if kind == "categorical" or not numeric:
        return _categorical(name, present, dtype)
    if kind is None and not image and present.nunique() <= MAX_CATEGORICAL_LEVELS:
        return _categorical(name, present, dtype)  # a few levels (codes, flags, {0.5, 1.0}): point masses
    whole = bool(np.all(np.mod(present.to_numpy(dtype=np.float64), 1.0) == 0.0))
    if kind == "integer" or (kind is None and whole):
        return Inferred(Column(name, "integer", dtype))
    return Inferred(Column(name, "continuous", dtype, decimals=_decimals(present.to_numpy(dtype=np.float64))))


def _identifier_note(name: str, values: pd.Series, present: pd.Series, is_datetime: bool) -> str | None:
    n = len(values)
    if n < MIN_ROWS_FOR_IDENTIFIER or present.nunique() != n:
        return None
    if pd.api.types.is_bool_dtype(values) or pd.api.types.is_float_dtype(values):
        numbers = pd.to_numeric(present, errors="coerce")
        if numbers.isna().any() or not np.all(np.mod(numbers, 1.0) == 0.0):
            return None
    elif pd.api.types.is_datetime64_any_dtype(values):
        return None
    if pd.api.types.is_numeric_dtype(values):
        low, high = float(present.min()), float(present.max())
        if not (high - low + 1 == n and low in (0.0, 1.0)):
            return None  # unique whole numbers that are not a row counter: a measurement
    elif is_datetime:
        return None
    return (
        f"column {name!r} left out: every row has its own value (an identifier); "
        f"pass --column {name}=categorical to keep it"
    )


def _categorical(name: str, present: pd.Series, dtype: str) -> Inferred:
    counts = present.value_counts()
    if len(counts) <= MAX_CATEGORY_LEVELS:
        return Inferred(Column(name, "categorical", dtype, categories=_sorted_labels(present)))
    kept = counts.index[: MAX_CATEGORY_LEVELS - 1]
    rest = frozenset(python_value(v) for v in counts.index[MAX_CATEGORY_LEVELS - 1 :])
    labels = (*_sorted_labels(pd.Series(kept)), OTHER_LABEL)
    note = (
        f"column {name!r}: {len(counts)} levels; the {MAX_CATEGORY_LEVELS - 1} most frequent are kept and the "
        f"other {len(rest)} ({int(counts.iloc[MAX_CATEGORY_LEVELS - 1 :].sum())} rows) become {OTHER_LABEL!r}"
    )
    return Inferred(Column(name, "categorical", "object", categories=labels), note, rest)


def _decimals(values: np.ndarray) -> int | None:
    scale = np.maximum(1.0, np.abs(values))
    for decimals in range(1, min(MAX_LEARNED_DECIMALS, MAX_DECIMALS) + 1):
        if np.all(np.abs(np.round(values, decimals) - values) <= 1e-9 * scale):
            return decimals
    return None


def grid_step(column: Column, present: np.ndarray) -> int:
    """The grid a rounded column's training values lie on, in units of 10**-decimals (1 for integer columns):
    the greatest common divisor of their offsets from the smallest. A step above 1 is kept only when chance
    would explain it less than once in GRID_EVIDENCE (k distinct values all on a grid of step g by chance:
    g ** -(k - 1)), and when the values are exact in float64 units."""
    decimals = 0 if column.kind == "integer" else column.decimals
    if column.kind == "categorical" or decimals is None or present.size < 2:
        return 1
    units = present.astype(np.float64) * 10.0**decimals
    if not np.all(np.abs(units) < MAX_STEP):
        return 1
    whole = np.unique(np.rint(units).astype(np.int64))
    step = int(np.gcd.reduce(whole - whole[0]))
    if step <= 1 or step > MAX_STEP or (len(whole) - 1) * math.log(step) < math.log(GRID_EVIDENCE):
        return 1
    return step


def _datetime_kind(values: pd.Series, present: pd.Series) -> tuple[bool, str | None]:
    """(holds datetimes, their text format): (True, None) for datetime64 columns."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return True, None
    if values.dtype != object or not all(isinstance(v, str) for v in present.iloc[:100]):
        return False, None
    fmt = _datetime_format(present)
    return fmt is not None, fmt


def _datetime_format(present: pd.Series) -> str | None:
    text = present.astype(str)
    sample = text.iloc[:200]
    if not sample.str.contains(r"\d", regex=True).all() or not sample.str.contains(r"[-/.:T]|^\d{8}$").all():
        return None
    for fmt in DATETIME_FORMATS:
        try:
            parsed = pd.to_datetime(text, format=fmt)
        except (ValueError, TypeError):
            continue
        if (parsed.dt.strftime(fmt) == text).all():
            return fmt
    return None


def _datetime_column(name: str, values: pd.Series, present: pd.Series, fmt: str | None) -> Inferred:
    if fmt is None and not pd.api.types.is_datetime64_any_dtype(values):
        raise ValueError(f"column {name!r}: not datetimes in one of the formats {DATETIME_FORMATS}")
    stamps = pd.to_datetime(present, format=fmt) if fmt is not None else pd.to_datetime(present)
    if getattr(stamps.dt, "tz", None) is not None:
        stamps = stamps.dt.tz_convert("UTC").dt.tz_localize(None)
    ns = stamps.to_numpy(dtype="datetime64[ns]").astype(np.int64)
    # Finer than a microsecond: microseconds, the sub-microsecond part is not modelled.
    unit, unit_ns = next(((u, n) for u, n in _UNITS if np.all(ns % n == 0)), _UNITS[-1])
    origin_ns = int(ns.min()) // unit_ns * unit_ns
    span = (int(ns.max()) - origin_ns) // unit_ns
    origin = str(np.datetime64(origin_ns, "ns").astype(f"datetime64[{unit}]"))
    dtype = str(values.dtype)
    kind = "integer" if span < _FLOAT32_EXACT else "continuous"
    return Inferred(
        Column(
            name,
            kind,
            dtype,
            decimals=0 if kind == "continuous" else None,
            datetime_unit=unit,
            datetime_origin=origin,
            datetime_format=fmt,
        )
    )
