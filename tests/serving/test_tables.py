"""`encode_table` writes the Table wire format itself: it must equal the Table built field by field."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from serving.proto import synthesizer_pb2 as pb
from serving.tables import decode_labels, decode_table, encode_table
from synthserve.contract import Schema, load_manifest

STORE = Path(__file__).resolve().parents[2] / "model_store"
SCHEMAS = {p.parent.parent.name: load_manifest(p.parent).schema for p in sorted(STORE.glob("*-vae/*/manifest.json"))}
pytestmark = pytest.mark.skipif(not SCHEMAS, reason="no shipped models in model_store/ yet")


def _field_by_field(schema: Schema, rows: np.ndarray, labels: np.ndarray | None) -> pb.Table:
    """The reference: protobuf's own API, one column at a time."""
    table = pb.Table(num_rows=len(rows))
    for index, column in enumerate(schema.columns):
        values = rows[:, index]
        if column.kind == "continuous":
            table.columns.add(name=column.name, value_type=pb.VALUE_TYPE_FLOAT32, values=values.astype("<f4").tobytes())
            continue
        high = len(column.categories) - 1 if column.kind == "categorical" and column.categories else 2**31 - 1
        low = 0 if column.kind == "categorical" and column.categories else -(2**31)
        codes = np.clip(np.rint(values), low, high).astype("<i4")
        table.columns.add(name=column.name, value_type=pb.VALUE_TYPE_INT32, values=codes.tobytes())
    if labels is not None:
        table.labels = labels.astype("<i4").tobytes()
    return table


@pytest.mark.parametrize("name", sorted(SCHEMAS))
@pytest.mark.parametrize("n_rows", [1, 2, 16, 17, 300, 5000])
def test_encode_table_equals_the_table_built_field_by_field(name: str, n_rows: int) -> None:
    schema = SCHEMAS[name]
    generator = np.random.default_rng(n_rows)
    rows = (generator.normal(size=(n_rows, schema.width)) * 20).astype(np.float32)  # codes out of range get clipped
    labels = None if schema.label is None else generator.integers(0, len(schema.label.classes), n_rows)
    expected = _field_by_field(schema, rows, labels)
    response = pb.SampleResponse(version=3)
    encoded = encode_table(schema, rows, labels, out=response.rows)
    assert encoded is response.rows
    assert response.rows == expected
    assert response.rows.SerializeToString(deterministic=True) == expected.SerializeToString(deterministic=True)
    assert encode_table(schema, rows, labels) == expected  # a fresh Table, and the cached template again
    decoded = decode_table(schema, response.rows, max_rows=n_rows)
    continuous = [i for i, c in enumerate(schema.columns) if c.kind == "continuous"]
    np.testing.assert_array_equal(decoded[:, continuous], rows[:, continuous])
    if labels is not None:
        np.testing.assert_array_equal(decode_labels(schema, response.rows, required=True), labels)


def test_a_table_without_labels_has_none() -> None:
    schema = next(iter(SCHEMAS.values()))
    table = encode_table(schema, np.zeros((3, schema.width), np.float32), None)
    assert table.labels == b"" and table.num_rows == 3 and len(table.columns) == len(schema.columns)
