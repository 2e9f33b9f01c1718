"""Columnar rows <-> numpy: the `Table` message (one little-endian buffer per column) and its validation.

Graphs see rows as float32 `[B, D]` in schema order (category codes as whole numbers); callers see one
buffer per column: FLOAT32 for continuous columns, INT32 for integer columns and category codes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from serving.errors import InvalidArgument
from serving.proto import synthesizer_pb2 as pb
from synthserve.contract import Schema

__all__ = ["decode_labels", "decode_table", "encode_table"]

_NUMPY_TYPES: dict[int, np.dtype] = {
    pb.VALUE_TYPE_FLOAT32: np.dtype("<f4"),
    pb.VALUE_TYPE_FLOAT64: np.dtype("<f8"),
    pb.VALUE_TYPE_INT32: np.dtype("<i4"),
    pb.VALUE_TYPE_INT64: np.dtype("<i8"),
}


@dataclass(frozen=True)
class _Layout:
    """Per-schema constants of `encode_table`: the columns' names and types (as a template Table and serialized
    per column), the integer columns, and the wire templates of small tables."""

    template: pb.Table  # the columns' names and types, no values
    heads: tuple[bytes, ...]  # the same fields of each Column, serialized
    int_index: np.ndarray  # columns sent as INT32 (integer and categorical)
    int_low: np.ndarray  # [len(int_index), 1] clip bounds: category codes stay within their categories
    int_high: np.ndarray
    wires: dict[int, _Wire] = field(default_factory=dict)  # by row count, up to _SMALL_ROWS


@dataclass(frozen=True)
class _Wire:
    """A serialized Table of `n` rows with zeroed column values, and the mask of their bytes (schema order)."""

    message: np.ndarray  # uint8
    values: np.ndarray  # bool


# By identity: hashing a schema (every column, every category label) costs more than encoding a small table.
_LAYOUTS: dict[int, tuple[Schema, _Layout]] = {}
_MAX_LAYOUTS = 256
# Tables of up to this many rows copy their values into a cached serialized template (one masked copy, one
# parse): a Python step per column would cost more than the values. Larger ones are filled column by column.
# 16 keeps most of the gain (one row: 11 -> 6.5 us, 16 rows: 12 -> 8 us; at 64 rows 13 -> 11 us) and the cache
# of each schema under ~150 KB.
_SMALL_ROWS = 16


def _layout(schema: Schema) -> _Layout:
    cached = _LAYOUTS.get(id(schema))
    if cached is not None and cached[0] is schema:
        return cached[1]
    if len(_LAYOUTS) >= _MAX_LAYOUTS:
        _LAYOUTS.clear()
    layout = _build_layout(schema)
    _LAYOUTS[id(schema)] = (schema, layout)  # holding the schema keeps its id from being reused
    return layout


def _build_layout(schema: Schema) -> _Layout:
    template = pb.Table()
    int_index, low, high = [], [], []
    for index, column in enumerate(schema.columns):
        value_type = pb.VALUE_TYPE_FLOAT32 if column.kind == "continuous" else pb.VALUE_TYPE_INT32
        template.columns.add(name=column.name, value_type=value_type)
        if column.kind == "continuous":
            continue
        int_index.append(index)
        categorical = column.kind == "categorical" and column.categories is not None
        low.append(0 if categorical else -(2.0**31))
        high.append(len(column.categories or ()) - 1 if categorical else 2.0**31 - 1)
    return _Layout(
        template,
        tuple(column.SerializeToString() for column in template.columns),
        np.asarray(int_index, dtype=np.int64),
        np.asarray(low, dtype=np.float32)[:, None],
        np.asarray(high, dtype=np.float32)[:, None],
    )


def _varint(value: int) -> bytes:
    """Protocol Buffers base-128 varint of a non-negative integer."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _wire(layout: _Layout, n_rows: int) -> _Wire:
    cached = layout.wires.get(n_rows)
    if cached is None:
        width = 4 * n_rows
        values_field = b"\x1a" + _varint(width)  # Column.values
        pieces, marks = [b"\x08" + _varint(n_rows)], [False]  # Table.num_rows
        for head in layout.heads:  # Table.columns: tag, length, name and type, then the values
            pieces += [b"\x12" + _varint(len(head) + len(values_field) + width) + head + values_field, bytes(width)]
            marks += [False, True]
        message = np.frombuffer(b"".join(pieces), dtype=np.uint8)
        values = np.repeat(marks, [len(piece) for piece in pieces])
        cached = layout.wires[n_rows] = _Wire(message, values)
    return cached


def encode_table(schema: Schema, rows: np.ndarray, labels: np.ndarray | None, out: pb.Table | None = None) -> pb.Table:
    """Graph rows `[n, D]` (and class indices `[n]`) -> Table, from one column-major copy of the rows.

    `out` (e.g. `response.rows`) is filled in place, saving the copy a `rows=` constructor argument makes.
    """
    layout = _layout(schema)
    n_rows = rows.shape[0]
    # FLOAT32 and INT32 share the 4-byte item size, so all columns live in one column-major buffer.
    # A copy even where the transpose is already contiguous (one row): integer codes are written into it.
    columns_first = np.array(rows.T, dtype="<f4", order="C")
    if layout.int_index.size:
        whole = np.rint(columns_first[layout.int_index])
        np.maximum(whole, layout.int_low, out=whole)  # in place: cheaper than np.clip's checks
        np.minimum(whole, layout.int_high, out=whole)
        columns_first.view("<i4")[layout.int_index] = whole.astype("<i4")
    table = pb.Table() if out is None else out
    if n_rows <= _SMALL_ROWS:
        wire = _wire(layout, n_rows)
        message = wire.message.copy()
        message[wire.values] = columns_first.view(np.uint8).ravel()
        payload = message.tobytes()
        if labels is not None:
            payload += b"\x1a" + _varint(4 * n_rows) + labels.astype("<i4", copy=False).tobytes()  # Table.labels
        table.ParseFromString(payload)
        return table
    buffer = columns_first.tobytes()
    table.CopyFrom(layout.template)
    table.num_rows = n_rows
    width = 4 * n_rows
    for index, column in enumerate(table.columns):
        column.values = buffer[index * width : (index + 1) * width]
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
            raise InvalidArgument(f"{field}.columns: column {column.name!r} appears twice")
        given[column.name] = column
    expected = [c.name for c in schema.columns]
    missing = [name for name in expected if name not in given]
    if missing:
        raise InvalidArgument(f"{field}.columns: missing column(s) {missing} (the model expects {expected})")
    unknown = sorted(set(given) - set(expected))
    if unknown:
        raise InvalidArgument(f"{field}.columns: unknown column(s) {unknown} (the model expects {expected})")
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
        if dtype.kind == "f":
            bad = int(np.count_nonzero(~np.isfinite(values)))
            if bad:
                raise InvalidArgument(f"{where}: {bad} value(s) are NaN or infinite")
        if spec.kind == "categorical" and spec.categories is not None:
            n_categories = len(spec.categories)
            bad_codes = (values < 0) | (values >= n_categories) | (values != np.floor(values))
            if bad_codes.any():
                first = values[np.argmax(bad_codes)]
                raise InvalidArgument(
                    f"{where}: category code {first} is out of range; codes are whole numbers in [0, {n_categories})"
                )
        rows[:, index] = values
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
