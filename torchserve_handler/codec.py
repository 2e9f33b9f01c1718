"""JSON request bodies -> typed requests and arrays; graph rows -> JSON columns in the training data's terms.

Requests are JSON objects: `{"n": 10, "seed": 7, "label": ...}` or `{"n": 10, "proportions": {...}}` samples,
`{"rows": {column: [values]}, "fpr": 0.01, "seed": 0}` scores. Columns travel by their training names, category
columns as their labels, the label column as class labels. Every error names the field and the limit.
Samples may ask for `"encoding": "npy"`: one float32 array in graph units and codes, for callers that want
throughput (JSON spends most of a 1,000-row request formatting floats).
"""

from __future__ import annotations

import datetime
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from synthserve.contract import (
    MAX_BEST_OF,
    MAX_GUIDANCE,
    MAX_TEMPERATURE,
    MISSING_CODE,
    PLAIN_SAMPLING,
    Column,
    SamplingOptions,
    Schema,
    accept_column,
    finish_rows,
    from_datetime64,
    level_codes,
    shorthand_conditions,
    to_datetime64,
)
from torchserve_handler.errors import InvalidRequest

__all__ = [
    "ENCODINGS",
    "SAMPLE_FIELDS",
    "SCORE_FIELDS",
    "SampleRequest",
    "ScoreRequest",
    "array_from_rows",
    "columns_from_rows",
    "decode_body",
    "npy_bytes",
    "parse_request",
    "rows_from_columns",
]

SAMPLE_FIELDS = ("n", "seed", "label", "proportions", "encoding", "temperature", "best_of", "guidance", "conditions")
ENCODINGS = ("json", "npy")
SCORE_FIELDS = ("rows", "seed", "fpr")
MAX_SEED = 2**64


@dataclass(frozen=True)
class SampleRequest:
    n_rows: int
    seed: int | None  # None: the handler draws one and returns it
    label: str | None  # a class label as text, like the gRPC API's
    proportions: dict[str, float] | None  # class label as text -> weight
    encoding: str = "json"  # json | npy
    sampling: SamplingOptions = PLAIN_SAMPLING  # temperature, best-of-k, guidance: the gRPC API's SamplingOptions
    # Feature conditions as the contract takes them ({"column", "equals"} or {"column", "low", "high"}),
    # checked against the model by synthserve.contract.resolve_conditions.
    conditions: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class ScoreRequest:
    columns: dict[str, Any]  # column name -> list of values; checked by rows_from_columns
    seed: int  # feeds the log_prob graph's noise (the VAE's importance samples); 0 when not given
    fpr: float | None  # flag rows below the calibrated threshold at this false-positive rate


def decode_body(body: object) -> dict[str, Any]:
    """TorchServe hands a JSON body over as bytes, text or an already decoded object."""
    if isinstance(body, bytes | bytearray):
        body = body.decode("utf-8", errors="replace")
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except json.JSONDecodeError as exc:
            raise InvalidRequest(f"body: not valid JSON ({exc})") from exc
    if not isinstance(body, dict):
        raise InvalidRequest(f"body: must be a JSON object, got {type(body).__name__}")
    return body


def _integer(value: Any, field: str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidRequest(f"{field}: must be an integer, got {value!r}")
    if not low <= value <= high:
        raise InvalidRequest(f"{field}: must be in [{low}, {high}], got {value}")
    return value


def _number(value: Any, field: str) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise InvalidRequest(f"{field}: must be a number, got {value!r}")
    return float(value)


def _seed(body: Mapping[str, Any]) -> int | None:
    return None if body.get("seed") is None else _integer(body["seed"], "seed", 0, MAX_SEED - 1)


def parse_request(body: Mapping[str, Any], max_rows: int) -> SampleRequest | ScoreRequest:
    """A body with `n` samples, one with `rows` scores; anything else is refused with the fields it may hold."""
    if ("n" in body) == ("rows" in body):
        raise InvalidRequest('body: give either "n" (sample rows) or "rows" (score rows), not both or neither')
    allowed = SAMPLE_FIELDS if "n" in body else SCORE_FIELDS
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise InvalidRequest(f"body: unknown field(s) {unknown}; this request takes {list(allowed)}")
    if "rows" in body:
        if not isinstance(body["rows"], dict):
            raise InvalidRequest("rows: must be an object mapping column names to lists of values")
        fpr = None if body.get("fpr") is None else _number(body["fpr"], "fpr")
        return ScoreRequest(columns=body["rows"], seed=_seed(body) or 0, fpr=fpr)
    if body.get("label") is not None and body.get("proportions") is not None:
        raise InvalidRequest('label, proportions: give at most one of "label" and "proportions"')
    proportions = body.get("proportions")
    if proportions is not None:
        if not isinstance(proportions, dict) or not proportions:
            raise InvalidRequest("proportions: must be a non-empty object mapping class labels to weights")
        proportions = {str(k): _number(v, f"proportions[{k!r}]") for k, v in proportions.items()}
    label = body.get("label")
    if isinstance(label, dict | list):
        raise InvalidRequest(f"label: must be one class label, got {label!r}")
    encoding = body.get("encoding", "json")
    if encoding not in ENCODINGS:
        raise InvalidRequest(f"encoding: must be one of {list(ENCODINGS)}, got {encoding!r}")
    temperature = 1.0 if body.get("temperature") is None else _number(body["temperature"], "temperature")
    if not 0.0 < temperature <= MAX_TEMPERATURE:
        raise InvalidRequest(f"temperature: must be in (0, {MAX_TEMPERATURE}], got {temperature}")
    best_of = 1 if body.get("best_of") is None else _integer(body["best_of"], "best_of", 1, MAX_BEST_OF)
    guidance = 1.0 if body.get("guidance") is None else _number(body["guidance"], "guidance")
    if not 0.0 <= guidance <= MAX_GUIDANCE:
        raise InvalidRequest(f"guidance: must be in [0, {MAX_GUIDANCE}], got {guidance}")
    n_rows = _integer(body["n"], "n", 1, max_rows)
    if n_rows * best_of > max_rows:
        raise InvalidRequest(f"n x best_of: {n_rows} x {best_of} rows to compute exceed the limit of {max_rows}")
    return SampleRequest(
        n_rows=n_rows,
        seed=_seed(body),
        label=None if label is None else str(label),
        proportions=proportions,
        encoding=encoding,
        sampling=SamplingOptions(temperature, best_of, guidance),
        conditions=() if body.get("conditions") is None else shorthand_conditions(body["conditions"]),
    )


def _category_codes(values: list[Any], categories: tuple[Any, ...], field: str) -> np.ndarray:
    """The contract's label rule (`level_codes`: labels compare as text; an unseen value is OTHER_LABEL where the
    column has it), as the gRPC client applies it."""
    if any(isinstance(v, list | dict) for v in values):
        raise InvalidRequest(f"{field}: categories must be text, numbers or booleans")
    try:
        return level_codes(values, categories, field)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None


def rows_from_columns(schema: Schema, columns: Mapping[str, Any], max_rows: int) -> np.ndarray:
    """Columns by training name -> float32 [n, D] in graph order; the label column, if given, is ignored."""
    expected = [c.name for c in schema.columns]
    ignored = {schema.label.name} if schema.label is not None else set()
    missing = [name for name in expected if name not in columns]
    if missing:
        raise InvalidRequest(f"rows: missing column(s) {missing} (the model expects {expected})")
    unknown = sorted(set(columns) - set(expected) - ignored)
    if unknown:
        raise InvalidRequest(f"rows: unknown column(s) {unknown} (the model expects {expected})")
    lengths = {name: len(v) if isinstance(v, list) else -1 for name, v in columns.items() if name in expected}
    not_lists = [name for name, n in lengths.items() if n < 0]
    if not_lists:
        raise InvalidRequest(f"rows: column(s) {not_lists} must be lists of values")
    n_rows = lengths[expected[0]]
    uneven = {name: n for name, n in lengths.items() if n != n_rows}
    if uneven:
        raise InvalidRequest(f"rows: every column needs {n_rows} values like {expected[0]!r}; got {uneven}")
    if not 1 <= n_rows <= max_rows:
        raise InvalidRequest(f"rows: must hold between 1 and {max_rows} rows, got {n_rows}")
    rows = np.empty((n_rows, len(expected)), dtype=np.float32)
    for index, column in enumerate(schema.columns):
        field = f"rows[{column.name!r}]"
        values = columns[column.name]
        gaps = np.array([v is None for v in values])  # null in JSON: a missing value
        numbers = np.full(n_rows, np.nan)
        present = [v for v in values if v is not None]
        if column.kind == "categorical" and column.categories is not None:
            numbers[~gaps] = _category_codes(present, column.categories, field)
        elif column.datetime_unit is not None:
            numbers[~gaps] = _datetime_units(present, column, field)
        else:
            if any(isinstance(v, bool) or not isinstance(v, int | float) for v in present):
                raise InvalidRequest(f"{field}: values must be numbers (or null for a missing value)")
            numbers[~gaps] = np.asarray(present, dtype=np.float64)
        try:
            rows[:, index] = accept_column(column, numbers, field)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
    return rows


def _datetime_units(values: list[Any], column: Column, field: str) -> np.ndarray:
    fmt = column.datetime_format
    try:
        stamps = [
            np.datetime64(datetime.datetime.strptime(v, fmt) if fmt else datetime.datetime.fromisoformat(v), "ns")
            for v in values
        ]
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"{field}: values must be datetimes written as {fmt or 'ISO 8601'} ({exc})") from None
    return from_datetime64(column, np.asarray(stamps, dtype="datetime64[ns]"))


def _json_values(column: Column, values: np.ndarray) -> list[Any]:
    """One finished column -> JSON values: category labels, whole numbers, floats, datetimes; null for a gap."""
    if column.kind == "categorical" and column.categories is not None:
        labels = np.asarray(column.categories, dtype=object)[np.clip(values, 0, None)]
        return [None if code == MISSING_CODE else label for code, label in zip(values.tolist(), labels.tolist())]
    if column.datetime_unit is not None:
        stamps = to_datetime64(column, values).astype("datetime64[us]").tolist()
        return [
            None if s is None else s.strftime(column.datetime_format) if column.datetime_format else s.isoformat()
            for s in stamps
        ]
    gaps = np.isnan(values) if values.dtype.kind == "f" else np.zeros(len(values), dtype=bool)
    if column.kind == "integer":
        numbers = np.where(gaps, 0, values).astype(np.int64).tolist()
    else:
        numbers = values.astype(np.float64).tolist()
    return [None if gap else v for v, gap in zip(numbers, gaps.tolist())]


def columns_from_rows(schema: Schema, rows: np.ndarray, labels: np.ndarray | None) -> dict[str, list[Any]]:
    """Graph rows [n, D] (+ class indices [n]) -> {column: values} as the gRPC server finishes them (ranges,
    decimals, gaps as null), in the training data's terms; the label column, for conditional models, comes last."""
    out = {
        column.name: _json_values(column, values) for column, values in zip(schema.columns, finish_rows(schema, rows))
    }
    if schema.label is not None and labels is not None:
        out[schema.label.name] = np.asarray(schema.label.classes, dtype=object)[labels].tolist()
    return out


def array_from_rows(schema: Schema, rows: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
    """Graph rows [n, D] -> float32 [n, D] of the finished values (codes; NaN for a gap), plus the class index as a
    last column when the model is conditional."""
    finished = np.stack(
        [
            np.where(v == MISSING_CODE, np.nan, v) if c.kind == "categorical" else v
            for c, v in zip(schema.columns, finish_rows(schema, rows))
        ],
        axis=1,
    ).astype(np.float32)
    if labels is None:
        return finished
    return np.concatenate([finished, labels.astype(np.float32)[:, None]], axis=1)


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()
