"""Column values between the graphs' float32 rows and what callers receive: one rule for every server.

Graphs take and return rows as float32 `[n, D]` in schema order: category codes as whole numbers, integer
columns as whole numbers, datetimes as whole `datetime_unit`s since `datetime_origin`, and NaN where a value is
missing. Callers receive one array per column (`finish_rows`), in the column's wire type (`wire_dtype`):
- categorical: int32 codes, -1 where the value is missing;
- integer (and datetimes): int32 when the column has no gaps and its range fits, else float64 (NaN = missing);
- continuous: float64 for float64 columns, float32 otherwise; NaN = missing.
Every numeric value is kept within the training [min, max] and continuous values are rounded to the
column's learned `decimals`, so a column written with 2 decimals comes back with 2 decimals; a column with a
`step` comes back on its grid (min + k * step units: lengths measured in 0.005 steps stay multiples of 0.005).
Incoming values (`accept_column`) may be missing (NaN, or code -1); the graphs score a gap by its column's
missingness and the other columns (docs/model_store.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synthserve.contract.manifest import Column, Schema

__all__ = [
    "FLOAT32_MAX",
    "MISSING_CODE",
    "accept_column",
    "finish_rows",
    "from_datetime64",
    "row_bytes",
    "table_overhead_bytes",
    "to_datetime64",
    "wire_dtype",
]

MISSING_CODE = -1  # a categorical value that is missing
FLOAT32_MAX = float(np.finfo(np.float32).max)
_INT32 = (-(2.0**31), 2.0**31 - 1)


def wire_dtype(column: Column) -> np.dtype:
    """The little-endian type a column's values travel in."""
    if column.kind == "categorical":
        return np.dtype("<i4")
    if column.kind == "integer":
        low = column.min if column.min is not None else _INT32[0]
        high = column.max if column.max is not None else _INT32[1]
        fits = _INT32[0] <= low and high <= _INT32[1]
        return np.dtype("<i4") if fits and not column.nullable else np.dtype("<f8")
    return np.dtype("<f8") if column.dtype == "float64" or column.datetime_unit else np.dtype("<f4")


@dataclass(frozen=True)
class _Plan:
    """Per-schema constants of `finish_rows`, as column vectors [D, 1] over the schema's columns (whole-array
    ufuncs with masks: a one-row table costs a few calls, not one per column)."""

    low: np.ndarray  # float64: min, or 0 for category codes; -inf where unbounded
    high: np.ndarray
    rounds: np.ndarray  # bool: rounded to `scale` steps (integer and categorical columns, continuous with decimals)
    scale: np.ndarray  # 10 ** decimals; 1 for whole numbers
    origin: np.ndarray  # gridded columns: min in units (an integer); 0 elsewhere
    step: np.ndarray  # gridded columns: the grid's step in units; 1 elsewhere
    gridded: bool  # some column's step is above 1
    categorical: np.ndarray  # bool: a gap becomes MISSING_CODE
    groups: tuple[tuple[np.dtype, np.ndarray], ...]  # (wire dtype, column indices)


# By identity: hashing a schema (every column, every category label) costs more than finishing a small table.
_PLANS: dict[int, tuple[Schema, _Plan]] = {}
_MAX_PLANS = 256


def _plan(schema: Schema) -> _Plan:
    cached = _PLANS.get(id(schema))
    if cached is not None and cached[0] is schema:
        return cached[1]
    if len(_PLANS) >= _MAX_PLANS:
        _PLANS.clear()
    columns = schema.columns
    low, high = np.full((len(columns), 1), -np.inf), np.full((len(columns), 1), np.inf)
    dtypes = [wire_dtype(column) for column in columns]
    for j, column in enumerate(columns):
        if column.kind == "categorical":
            low[j], high[j] = 0.0, float(len(column.categories or ()) - 1)
            continue
        if column.min is not None:
            low[j] = column.min
        if column.max is not None:
            high[j] = column.max
    decimals = [0 if c.kind != "continuous" else c.decimals for c in columns]
    scale = np.asarray([10.0 ** (d or 0) for d in decimals])[:, None]
    gridded = [c.step > 1 and c.min is not None and d is not None for c, d in zip(columns, decimals)]
    plan = _Plan(
        low,
        high,
        np.asarray([d is not None for d in decimals])[:, None],
        scale,
        np.asarray([np.rint(c.min * scale[j, 0]) if g else 0.0 for j, (c, g) in enumerate(zip(columns, gridded))])[
            :, None
        ],
        np.asarray([float(c.step) if g else 1.0 for c, g in zip(columns, gridded)])[:, None],
        any(gridded),
        np.asarray([c.kind == "categorical" for c in columns])[:, None],
        tuple(
            (dtype, np.asarray([j for j, d in enumerate(dtypes) if d == dtype], dtype=np.int64))
            for dtype in dict.fromkeys(dtypes)
        ),
    )
    _PLANS[id(schema)] = (schema, plan)  # holding the schema keeps its id from being reused
    return plan


def row_bytes(schema: Schema) -> int:
    """Bytes one row takes in a response's columns (each in its wire type), plus its 4-byte class index."""
    return sum(wire_dtype(column).itemsize for column in schema.columns) + 4


def table_overhead_bytes(schema: Schema) -> int:
    """A generous bound on what a response Table adds to its values: per column its name, type and field headers,
    plus the message envelope (version, seed, row counts). A chunk of n rows fits a message of
    n * row_bytes + table_overhead_bytes."""
    return 256 + sum(len(column.name.encode()) + 24 for column in schema.columns)


def finish_rows(schema: Schema, rows: np.ndarray) -> list[np.ndarray]:
    """Graph rows `[n, D]` (float32, NaN = missing) -> one array per column in schema order, in each column's
    `wire_dtype`: clipped to [min, max], whole numbers rounded, continuous values rounded to their decimals,
    gridded columns to the nearest point of their grid (min and max are on it, so the range holds)."""
    plan = _plan(schema)
    values = np.array(rows.T, dtype=np.float64, order="C")  # [D, n]; a copy even for one row
    np.clip(values, plan.low, plan.high, out=values)  # NaN stays NaN
    # Rounded as np.round does it (x * 10^d, rint, / 10^d), every rounded column at once; on a grid, the units'
    # offset from min is rounded to whole steps (exact: whole numbers of units below 2**53).
    np.multiply(values, plan.scale, out=values, where=plan.rounds)
    if plan.gridded:
        values -= plan.origin
        values /= plan.step
    np.rint(values, out=values, where=plan.rounds)
    if plan.gridded:
        values *= plan.step
        values += plan.origin
    np.divide(values, plan.scale, out=values, where=plan.rounds)
    np.copyto(values, MISSING_CODE, where=plan.categorical & np.isnan(values))
    if len(plan.groups) == 1:  # one wire type for every column: no reordering
        return list(values.astype(plan.groups[0][0], copy=False))
    out: list[np.ndarray] = [values[0]] * len(schema.columns)
    for dtype, index in plan.groups:
        group = values[index].astype(dtype)
        for position, j in enumerate(index):
            out[j] = group[position]
    return out


def accept_column(column: Column, values: np.ndarray, where: str) -> np.ndarray:
    """A caller's values for one column -> float32 graph values (NaN = missing); ValueError naming `where`.

    Missing values are NaN in float buffers and -1 among category codes. Infinite values, numbers beyond
    float32's range and category codes outside [0, categories) are refused.
    """
    if column.kind == "categorical" and column.categories is not None:
        n_categories = len(column.categories)
        present = values[~np.isnan(values)] if values.dtype.kind == "f" else values
        present = present[present != MISSING_CODE]
        bad = (present < 0) | (present >= n_categories) | (present != np.floor(present))
        if bad.any():
            raise ValueError(
                f"{where}: category code {present[np.argmax(bad)]} is out of range; codes are whole numbers in "
                f"[0, {n_categories}), or {MISSING_CODE} for a missing value"
            )
        out = values.astype(np.float32)
        out[values == MISSING_CODE] = np.nan
        return out
    with np.errstate(over="ignore"):
        out = values.astype(np.float32)
    infinite = np.isinf(out)  # after the cast: float64 values beyond float32's range became inf here
    if infinite.any():
        raise ValueError(
            f"{where}: {int(infinite.sum())} value(s) are infinite or beyond float32's range "
            f"(|x| <= {FLOAT32_MAX:.4g}); send missing values as NaN"
        )
    return out


def _unit(column: Column) -> np.timedelta64:
    assert column.datetime_unit is not None
    return np.timedelta64(1, column.datetime_unit)  # type: ignore[call-overload]


def to_datetime64(column: Column, values: np.ndarray) -> np.ndarray:
    """Graph or wire numbers of a datetime column -> datetime64[ns] (NaT where missing)."""
    assert column.datetime_origin is not None
    origin = np.datetime64(column.datetime_origin, "ns")
    numbers = np.asarray(values, dtype=np.float64)
    missing = np.isnan(numbers)
    whole = np.rint(np.where(missing, 0, numbers)).astype(np.int64)
    out = origin + whole * _unit(column).astype("timedelta64[ns]")
    out[missing] = np.datetime64("NaT")
    return out


def from_datetime64(column: Column, values: np.ndarray) -> np.ndarray:
    """datetime64 values (NaT = missing) -> float64 whole units since the column's origin (NaN = missing)."""
    assert column.datetime_origin is not None
    stamps = np.asarray(values, dtype="datetime64[ns]")
    missing = np.isnat(stamps)
    origin = np.datetime64(column.datetime_origin, "ns")
    unit_ns = _unit(column).astype("timedelta64[ns]").astype(np.int64)
    offsets = (stamps - origin).astype(np.int64) / unit_ns
    return np.where(missing, np.nan, offsets)
