"""JSON bodies -> typed requests and rows; rows -> JSON columns in the training data's terms."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from synthserve.contract import Column, Schema, load_manifest
from torchserve_handler.codec import (
    SampleRequest,
    ScoreRequest,
    array_from_rows,
    columns_from_rows,
    decode_body,
    npy_bytes,
    parse_request,
    rows_from_columns,
)
from torchserve_handler.errors import InvalidRequest

MAX_ROWS = 100


@pytest.fixture(scope="module")
def schema(tiny_store: Path) -> Schema:
    return load_manifest(tiny_store / "tiny-cond" / "1").schema


def test_parse_sample_and_score_requests() -> None:
    assert parse_request({"n": 10, "seed": 7, "label": "pos"}, MAX_ROWS) == SampleRequest(10, 7, "pos", None)
    assert parse_request({"n": 3, "proportions": {"1": 2}}, MAX_ROWS) == SampleRequest(3, None, None, {"1": 2.0})
    assert parse_request({"n": 1, "label": 1}, MAX_ROWS) == SampleRequest(1, None, "1", None)  # labels as text
    assert parse_request({"n": 1, "encoding": "npy"}, MAX_ROWS) == SampleRequest(1, None, None, None, "npy")
    assert parse_request({"n": 1, "seed": 2**64 - 1}, MAX_ROWS).seed == 2**64 - 1  # type: ignore[union-attr]
    rows = {"x": [1.0]}
    assert parse_request({"rows": rows, "fpr": 0.01}, MAX_ROWS) == ScoreRequest(rows, 0, 0.01)
    assert parse_request({"rows": rows, "seed": 3}, MAX_ROWS) == ScoreRequest(rows, 3, None)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, 'give either "n" \\(sample rows\\) or "rows"'),
        ({"n": 1, "rows": {}}, 'give either "n"'),
        ({"n": 0}, r"n: must be in \[1, 100\], got 0"),
        ({"n": 101}, r"n: must be in \[1, 100\], got 101"),
        ({"n": "3"}, "n: must be an integer, got '3'"),
        ({"n": True}, "n: must be an integer, got True"),
        ({"n": 1, "seed": -1}, r"seed: must be in \[0, 18446744073709551615\], got -1"),
        ({"n": 1, "seed": 2**64}, "seed: must be in"),
        ({"n": 1, "seed": 1.5}, "seed: must be an integer"),
        ({"n": 1, "label": "a", "proportions": {"a": 1}}, 'give at most one of "label" and "proportions"'),
        ({"n": 1, "label": ["a"]}, "label: must be one class label"),
        ({"n": 1, "proportions": {}}, "proportions: must be a non-empty object"),
        ({"n": 1, "proportions": {"a": "x"}}, r"proportions\['a'\]: must be a number, got 'x'"),
        ({"n": 1, "num_rows": 3}, r"unknown field\(s\) \['num_rows'\]; this request takes \['n', 'seed'"),
        ({"n": 1, "encoding": "csv"}, r"encoding: must be one of \['json', 'npy'\], got 'csv'"),
        ({"n": 1, "temperature": 0}, r"temperature: must be in \(0, 4.0\], got 0.0"),
        ({"n": 1, "temperature": "hot"}, "temperature: must be a number, got 'hot'"),
        ({"n": 1, "best_of": 0}, r"best_of: must be in \[1, 64\], got 0"),
        ({"n": 1, "best_of": 65}, r"best_of: must be in \[1, 64\], got 65"),
        ({"n": 60, "best_of": 2}, r"n x best_of: 60 x 2 rows to compute exceed the limit of 100"),
        ({"n": 1, "guidance": -0.5}, r"guidance: must be in \[0, 10.0\], got -0.5"),
        ({"n": 1, "guidance": "strong"}, "guidance: must be a number, got 'strong'"),
        ({"rows": [1]}, "rows: must be an object mapping column names to lists of values"),
        ({"rows": {}, "fpr": "low"}, "fpr: must be a number, got 'low'"),
        ({"rows": {}, "label": "a"}, r"unknown field\(s\) \['label'\]; this request takes \['rows', 'seed', 'fpr'\]"),
    ],
)
def test_parse_request_names_the_field_and_limit(body: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        parse_request(body, MAX_ROWS)


@pytest.mark.parametrize("body", [b'{"n": 2}', bytearray(b'{"n": 2}'), '{"n": 2}', {"n": 2}])
def test_decode_body_accepts_what_torchserve_hands_over(body: object) -> None:
    assert decode_body(body) == {"n": 2}


@pytest.mark.parametrize(("body", "message"), [(b"{", "body: not valid JSON"), (b"[1]", "body: must be a JSON object")])
def test_decode_body_refuses_non_objects(body: bytes, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        decode_body(body)


def test_columns_round_trip_in_training_terms(schema: Schema) -> None:
    rows = np.array([[0.1, 2.0, 7.0, -3.5], [1e-8, 0.0, 0.0, 1e6]], dtype=np.float32)
    columns = columns_from_rows(schema, rows, np.array([1, 0]))
    assert columns == {
        "x": [float(np.float32(0.1)), float(np.float32(1e-8))],
        "color": ["blue", "red"],
        "count": [7, 0],
        "y": [-3.5, 1e6],
        "target": ["pos", "neg"],
    }
    json.dumps(columns, allow_nan=False)  # plain JSON types only
    np.testing.assert_array_equal(rows_from_columns(schema, columns, MAX_ROWS), rows)  # the label column is ignored


def test_columns_round_whole_numbers_and_clip_codes_like_the_grpc_server(schema: Schema) -> None:
    rows = np.array([[0.0, 2.6, 3.4, 0.0], [0.0, -0.7, 3.6, 0.0]], dtype=np.float32)
    columns = columns_from_rows(schema, rows, None)
    assert columns["color"] == ["blue", "red"]
    assert columns["count"] == [3, 4]
    assert "target" not in columns


def test_npy_rows_are_rounded_like_json_rows(schema: Schema) -> None:
    rows = np.array([[0.1, 2.6, 3.4, 0.0], [0.2, -0.7, 3.6, 1.0]], dtype=np.float32)
    array = np.load(io.BytesIO(npy_bytes(array_from_rows(schema, rows, np.array([0, 1])))), allow_pickle=False)
    expected = np.array([[0.1, 2.0, 3.0, 0.0, 0.0], [0.2, 0.0, 4.0, 1.0, 1.0]], dtype=np.float32)
    np.testing.assert_array_equal(array, expected)
    np.testing.assert_array_equal(array_from_rows(schema, rows, None), array[:, :4])


def test_categories_match_by_value_or_text() -> None:
    schema = Schema(columns=(Column("grade", "categorical", "int64", categories=(3, 5)),))
    rows = rows_from_columns(schema, {"grade": [5, "5", 3.0, "3"]}, MAX_ROWS)
    assert rows[:, 0].tolist() == [1.0, 1.0, 0.0, 0.0]
    assert columns_from_rows(schema, rows, None) == {"grade": [5, 5, 3, 3]}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"y": None}, r"rows: missing column\(s\) \['y'\] \(the model expects \['x', 'color', 'count', 'y'\]\)"),
        ({"z": [1.0]}, r"rows: unknown column\(s\) \['z'\]"),
        ({"y": 1.0}, r"rows: column\(s\) \['y'\] must be lists of values"),
        ({"y": [1.0, 2.0]}, r"rows: every column needs 1 values like 'x'; got \{'y': 2\}"),
        ({"x": [], "color": [], "count": [], "y": []}, r"rows: must hold between 1 and 100 rows, got 0"),
        ({"x": ["1"]}, r"rows\['x'\]: values must be numbers"),
        ({"x": [True]}, r"rows\['x'\]: values must be numbers"),
        ({"count": [float("inf")]}, r"rows\['count'\]: 1 value\(s\) are infinite"),
        (
            {"color": ["purple"]},
            r"rows\['color'\]: unknown value\(s\) 'purple' \(known: \['red'",
        ),
    ],
)
def test_rows_from_columns_names_the_column(schema: Schema, change: dict[str, Any], message: str) -> None:
    columns: dict[str, Any] = {"x": [0.0], "color": ["red"], "count": [1], "y": [0.0]}
    for name, value in change.items():
        if value is None:
            del columns[name]
        else:
            columns[name] = value
    with pytest.raises(InvalidRequest, match=message):
        rows_from_columns(schema, columns, MAX_ROWS)


def test_rows_from_columns_limits_rows(schema: Schema) -> None:
    columns = {"x": [0.0] * 101, "color": ["red"] * 101, "count": [1] * 101, "y": [0.0] * 101}
    with pytest.raises(InvalidRequest, match=r"rows: must hold between 1 and 100 rows, got 101"):
        rows_from_columns(schema, columns, MAX_ROWS)


def test_gaps_travel_as_null_and_datetimes_in_their_format() -> None:
    schema = Schema(
        columns=(
            Column("price", "continuous", "float64", min=0.0, max=100.0, decimals=2, missing_rate=0.1),
            Column("city", "categorical", "object", categories=("a", "b"), missing_rate=0.2),
            Column("kids", "integer", "float64", min=0.0, max=4.0, missing_rate=0.1),
            Column(
                "day",
                "integer",
                "object",
                min=0.0,
                max=60.0,
                datetime_unit="D",
                datetime_origin="2024-02-01",
                datetime_format="%d/%m/%Y",
            ),
        )
    )
    columns = {"price": [12.345, None], "city": [None, "b"], "kids": [None, 7], "day": ["03/02/2024", "01/02/2024"]}
    rows = rows_from_columns(schema, columns, MAX_ROWS)
    np.testing.assert_array_equal(rows, np.array([[12.345, np.nan, np.nan, 2.0], [np.nan, 1.0, 7.0, 0.0]], np.float32))
    assert columns_from_rows(schema, rows, None) == {
        "price": [12.35, None],  # rounded to its decimals
        "city": [None, "b"],
        "kids": [None, 4],  # within the training range
        "day": ["03/02/2024", "01/02/2024"],
    }
    with pytest.raises(InvalidRequest, match=r"rows\['day'\]: values must be datetimes written as %d/%m/%Y"):
        rows_from_columns(schema, {**columns, "day": ["2024-02-03", None]}, MAX_ROWS)
