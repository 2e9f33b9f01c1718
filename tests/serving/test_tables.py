"""`TableEncoder` sends the contract's finished values in each column's wire type; `decode_table` takes gaps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from serving.errors import InvalidArgument
from serving.proto import synthesizer_pb2 as pb
from serving.tables import TableEncoder, decode_labels, decode_table
from synthserve.contract import Column, Schema, finish_rows, load_manifest, wire_dtype

STORE = Path(__file__).resolve().parents[2] / "model_store"
SCHEMAS = {p.parent.parent.name: load_manifest(p.parent).schema for p in sorted(STORE.glob("*-vae/*/manifest.json"))}
_WIRE = {"<f4": pb.VALUE_TYPE_FLOAT32, "<f8": pb.VALUE_TYPE_FLOAT64, "<i4": pb.VALUE_TYPE_INT32}
GAPS = Schema(
    (
        Column("price", "continuous", "float64", min=0.0, max=10.0, decimals=2, missing_rate=0.1),
        Column("kids", "integer", "float64", min=0.0, max=5.0, missing_rate=0.2),
        Column("city", "categorical", "object", categories=("a", "b"), missing_rate=0.1),
    )
)


@pytest.mark.parametrize("name", [*sorted(SCHEMAS), "gaps"])
@pytest.mark.parametrize("n_rows", [1, 2, 17, 5000])
def test_tables_carry_the_finished_values_in_their_wire_types(name: str, n_rows: int) -> None:
    schema = SCHEMAS.get(name, GAPS)
    generator = np.random.default_rng(n_rows)
    rows = (generator.normal(size=(n_rows, schema.width)) * 20).astype(np.float32)  # out of range: clipped
    rows[generator.random(rows.shape) < 0.1] = np.nan if name == "gaps" else 0.0
    labels = None if schema.label is None else generator.integers(0, len(schema.label.classes), n_rows)
    response = pb.SampleResponse(version=3)
    encoder = TableEncoder(schema)
    encoded = encoder.encode(rows, labels, out=response.rows)
    assert encoded is response.rows and encoded.num_rows == n_rows
    for column, spec, expected in zip(encoded.columns, schema.columns, finish_rows(schema, rows)):
        assert column.name == spec.name and column.value_type == _WIRE[wire_dtype(spec).str]
        np.testing.assert_array_equal(np.frombuffer(column.values, dtype=wire_dtype(spec)), expected)
    fresh = encoder.encode(rows, labels)
    assert fresh == encoded  # a fresh Table from the same template
    fresh.columns[0].name = "changed"
    assert encoder.encode(rows, labels) == encoded  # the template is copied, never shared
    decoded = decode_table(schema, encoded, max_rows=n_rows)
    np.testing.assert_array_equal(np.isnan(decoded), np.isnan(rows))  # gaps survive the round trip
    if labels is not None:
        np.testing.assert_array_equal(decode_labels(schema, encoded, required=True), labels)


def test_a_table_without_labels_has_none() -> None:
    table = TableEncoder(GAPS).encode(np.zeros((3, GAPS.width), np.float32), None)
    assert table.labels == b"" and table.num_rows == 3 and len(table.columns) == len(GAPS.columns)


def _table(values: dict[str, np.ndarray]) -> pb.Table:
    table = pb.Table(num_rows=len(next(iter(values.values()))))
    for name, array in values.items():
        table.columns.add(name=name, value_type=_WIRE[array.dtype.str], values=array.tobytes())
    return table


def test_decode_table_takes_gaps_and_refuses_values_float32_cannot_hold() -> None:
    table = _table(
        {
            "price": np.array([1.5, np.nan], "<f8"),
            "kids": np.array([np.nan, 2.0], "<f8"),
            "city": np.array([-1, 1], "<i4"),
        }
    )
    rows = decode_table(GAPS, table, max_rows=10)
    np.testing.assert_array_equal(rows, np.array([[1.5, np.nan, np.nan], [np.nan, 2.0, 1.0]], np.float32))
    table.columns[0].values = np.array([1e300, 1.0], "<f8").tobytes()
    with pytest.raises(InvalidArgument, match=r"rows.columns\['price'\]: 1 value\(s\) are infinite or beyond"):
        decode_table(GAPS, table, max_rows=10)
