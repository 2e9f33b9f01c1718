"""Columnar rows <-> numpy: the `Table` message (one little-endian buffer per column) and its validation.

Graphs see rows as float32 `[B, D]` in schema order (category codes as whole numbers, NaN for a gap); callers
see one buffer per column in the type the contract gives it (`synthserve.contract.values`).
"""

from __future__ import annotations

import numpy as np

from serving.errors import InvalidArgument
from serving.proto import synthesizer_pb2 as pb
from synthserve.contract import Schema, accept_column, finish_rows, shown, wire_dtype

__all__ = ["TableEncoder", "decode_labels", "decode_table"]

_NUMPY_TYPES: dict[int, np.dtype] = {
    pb.VALUE_TYPE_FLOAT32: np.dtype("<f4"),
    pb.VALUE_TYPE_FLOAT64: np.dtype("<f8"),
    pb.VALUE_TYPE_INT32: np.dtype("<i4"),
    pb.VALUE_TYPE_INT64: np.dtype("<i8"),
}
_WIRE_TYPES: dict[np.dtype, int] = {dtype: value_type for value_type, dtype in _NUMPY_TYPES.items()}


class TableEncoder:
    """Graph rows `[n, D]` (and class indices `[n]`) -> Table messages of one schema, values as the contract's
    `finish_rows` gives them.

    Built once per served version (`LoadedModel.table_encoder`): a response starts as a copy of the schema's
    column template (names and wire types), about 3x cheaper than adding the columns one by one (a one-row digits
    table: 31 vs 92 us, docs/benchmarks.md), which is ~10 % of a one-row Sample's server CPU for wide schemas.
    """

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self._template = pb.Table()
        for column in schema.columns:
            self._template.columns.add(name=column.name, value_type=_WIRE_TYPES[wire_dtype(column)])

    def encode(self, rows: np.ndarray, labels: np.ndarray | None, out: pb.Table | None = None) -> pb.Table:
        """`out` (e.g. `response.rows`) is filled in place, saving the copy a `rows=` constructor argument makes."""
        values = finish_rows(self.schema, rows)
        table = pb.Table() if out is None else out
        table.CopyFrom(self._template)
        table.num_rows = rows.shape[0]
        for column, column_values in zip(table.columns, values):
            column.values = column_values.tobytes()
        if labels is not None:
            table.labels = labels.astype("<i4", copy=False).tobytes()
        return table


def decode_table(schema: Schema, table: pb.Table, max_rows: int, field: str = "rows") -> np.ndarray:
    """Table -> float32 `[n, D]` in schema order, or InvalidArgument naming the field and the limit."""
    n_rows = table.num_rows
    if n_rows <= 0:
        raise InvalidArgument(f"{field}.num_rows must be > 0, got {n_rows}")
    if n_rows > max_rows:
        raise InvalidArgument(f"{field}.num_rows {n_rows} exceeds the per-request limit of {max_rows} rows")
    given = {}
    for column in table.columns:
        if column.name in given:
            raise InvalidArgument(f"{field}.columns: column {shown(column.name)} appears twice")
        given[column.name] = column
    expected = [c.name for c in schema.columns]
    missing = [name for name in expected if name not in given]
    if missing:
        raise InvalidArgument(f"{field}.columns: missing column(s) {missing} (the model expects {expected})")
    unknown = sorted(set(given) - set(expected))
    if unknown:
        more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
        raise InvalidArgument(
            f"{field}.columns: unknown column(s) [{', '.join(map(shown, unknown[:3]))}]{more} "
            f"(the model expects {expected})"
        )
    rows = np.empty((n_rows, len(expected)), dtype=np.float32)
    for index, spec in enumerate(schema.columns):
        column = given[spec.name]
        where = f"{field}.columns[{spec.name!r}]"
        dtype = _NUMPY_TYPES.get(column.value_type)
        if dtype is None:
            raise InvalidArgument(f"{where}.value_type must be FLOAT32, FLOAT64, INT32 or INT64")
        if len(column.values) != n_rows * dtype.itemsize:
            raise InvalidArgument(
                f"{where}.values holds {len(column.values)} bytes; {n_rows} rows of {dtype.name} need "
                f"{n_rows * dtype.itemsize}"
            )
        values = np.frombuffer(column.values, dtype=dtype)
        try:
            rows[:, index] = accept_column(spec, values, where)
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from None
    return rows


def decode_labels(schema: Schema, table: pb.Table, required: bool, field: str = "rows") -> np.ndarray | None:
    """Table.labels -> int64 class indices `[n]`; None when absent and not required."""
    if schema.label is None:
        if table.labels:
            raise InvalidArgument(f"{field}.labels: the model is unconditional and takes no labels")
        return None
    if not table.labels:
        if required:
            raise InvalidArgument(f"{field}.labels: the model is conditional; give one class index per row")
        return None
    if len(table.labels) != table.num_rows * 4:
        raise InvalidArgument(
            f"{field}.labels holds {len(table.labels)} bytes; {table.num_rows} INT32 need {table.num_rows * 4}"
        )
    labels = np.frombuffer(table.labels, dtype="<i4").astype(np.int64)
    n_classes = len(schema.label.classes)
    if labels.min() < 0 or labels.max() >= n_classes:
        raise InvalidArgument(f"{field}.labels: class indices must be in [0, {n_classes})")
    return labels
