"""Reading `manifest.json`: every way a file can be unusable ends in one ManifestError naming the file and field.

One bad manifest is one refused model version, never a crashed reader: sizes, encodings, nesting, types, ranges
and file paths are all checked before a `Manifest` (synthserve.contract.manifest) is built.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from synthserve.contract.manifest import (
    COLUMN_KINDS,
    DATETIME_UNITS,
    FORMAT_VERSION,
    GRAPH_NAMES,
    MANIFEST_FILE,
    MAX_DECIMALS,
    MAX_STEP,
    TENSOR_DTYPES,
    TENSOR_ROLES,
    Calibration,
    Column,
    GraphSpec,
    LabelSpec,
    Manifest,
    ManifestError,
    Schema,
    TensorSpec,
)
from synthserve.contract.quoting import shown

__all__ = ["MAX_MANIFEST_BYTES", "check_file_name", "load_manifest"]

MAX_MANIFEST_BYTES = 16 * 1024 * 1024  # the largest shipped manifest is ~32 KB
MAX_FILE_NAME = 255


def load_manifest(path: str | Path) -> Manifest:
    """Read and validate `manifest.json` (a file, or the version directory holding it).

    Every way a file can be unusable (missing, a directory, unreadable, over MAX_MANIFEST_BYTES, not UTF-8,
    not JSON, nested too deeply, a field of the wrong type) ends in ManifestError naming the file and the field,
    so one bad manifest is one refused model, never a crashed reader.
    """
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_FILE
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_MANIFEST_BYTES + 1)
    except FileNotFoundError as exc:
        raise ManifestError(f"{path}: no manifest") from exc
    except OSError as exc:
        raise ManifestError(f"{path}: cannot be read ({type(exc).__name__}: {exc.strerror or exc})") from exc
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{path}: larger than {MAX_MANIFEST_BYTES} bytes (MAX_MANIFEST_BYTES)")
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    except RecursionError as exc:
        raise ManifestError(f"{path}: JSON nested too deeply") from exc
    except ValueError as exc:  # json.JSONDecodeError, and numbers json cannot convert
        raise ManifestError(f"{path}: not valid JSON ({exc})") from exc
    try:
        return _parse_manifest(data)
    except ManifestError as exc:
        raise ManifestError(f"{path}: {exc}") from exc
    except RecursionError as exc:
        raise ManifestError(f"{path}: nested too deeply") from exc


def check_file_name(name: Any, where: str) -> str:
    """A file the manifest names: a relative path that stays inside the version directory.

    Refuses absolute paths, `..` and `.` parts, empty parts, backslashes and control characters, so that no
    manifest can point a reader outside its own version directory (readers also resolve symlinks).
    """
    if not isinstance(name, str) or not name or len(name) > MAX_FILE_NAME:
        raise ManifestError(f"{where}: a file name must be a string of 1-{MAX_FILE_NAME} characters")
    parts = name.split("/")
    if (
        name.startswith("/")
        or "\\" in name
        or any(part in ("", ".", "..") for part in parts)
        or any(ord(ch) < 32 for ch in name)
    ):
        raise ManifestError(f"{where}: {_quoted(name)} must be a relative path inside the version directory")
    return name


def _quoted(value: Any) -> str:
    return shown(value, 80)


def _require(data: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in data:
        raise ManifestError(f"missing field {where}{key}")
    value = data[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ManifestError(f"field {where}{key} has the wrong type ({type(value).__name__})")
    return value


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ManifestError(f"{where} must be an object, got {type(value).__name__}")
    return value


def _optional_object(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    return {} if value is None else dict(_object(value, key))


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ManifestError(f"{where} must be a finite number, got {_quoted(value)}")
    return float(value)


def _labels(values: list[Any], where: str) -> tuple[Any, ...]:
    """Category or class labels: JSON scalars (text, numbers, booleans), each once."""
    for i, value in enumerate(values):
        if value is not None and not isinstance(value, str | int | float | bool):
            raise ManifestError(f"{where}[{i}] must be text, a number or a boolean, got {type(value).__name__}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ManifestError(f"{where}[{i}] must be finite, got {value}")
    return tuple(values)


def _parse_manifest(data: Any) -> Manifest:
    if not isinstance(data, dict):
        raise ManifestError("manifest must be a JSON object")
    fmt = _require(data, "format_version", int, "")
    if fmt != FORMAT_VERSION:
        raise ManifestError(
            f"format_version {fmt} is not supported by this synthserve (it reads format_version {FORMAT_VERSION})"
        )
    graphs_raw = _require(data, "graphs", dict, "")
    graphs = {}
    for gname, graw in graphs_raw.items():
        if gname not in GRAPH_NAMES:
            raise ManifestError(f"graphs.{_quoted(gname)}: unknown graph (expected one of {GRAPH_NAMES})")
        graphs[gname] = _parse_graph(graw, f"graphs.{gname}.")
    if "sample" not in graphs:
        raise ManifestError("graphs.sample: every model must export a sample graph")
    if "sample_guided" in graphs and graphs["sample_guided"].input_named("guidance") is None:
        raise ManifestError("graphs.sample_guided: needs an input with role 'guidance' (the weight of each row)")
    declared = data.get("capabilities")
    if declared is not None:
        if not isinstance(declared, list) or not all(isinstance(c, str) for c in declared):
            raise ManifestError(f"capabilities must be a list of graph names, got {_quoted(declared)}")
        if sorted(declared) != sorted(graphs):
            raise ManifestError(f"capabilities {_quoted(declared)} do not match graphs {sorted(graphs)}")
    calibration = None
    if data.get("calibration") is not None:
        craw = _require(data, "calibration", dict, "")
        fpr = tuple(_number(v, "calibration.fpr[]") for v in _require(craw, "fpr", list, "calibration."))
        quantiles = tuple(
            _number(v, "calibration.log_prob_quantiles[]")
            for v in _require(craw, "log_prob_quantiles", list, "calibration.")
        )
        if len(fpr) != len(quantiles) or len(fpr) < 2 or list(fpr) != sorted(fpr) or not 0 < fpr[0] <= fpr[-1] < 1:
            raise ManifestError(
                "calibration: fpr must be increasing within (0, 1) and as long as log_prob_quantiles (>= 2)"
            )
        anomaly = None
        if craw.get("anomaly_score_quantiles") is not None:
            anomaly = tuple(
                _number(v, "calibration.anomaly_score_quantiles[]")
                for v in _require(craw, "anomaly_score_quantiles", list, "calibration.")
            )
            if len(anomaly) != len(fpr):
                raise ManifestError("calibration: anomaly_score_quantiles must be as long as fpr")
        n_heldout = int(_require(craw, "n_heldout", int, "calibration."))
        calibration = Calibration(fpr, quantiles, n_heldout, anomaly)
    version = _require(data, "version", int, "")
    if version < 1:
        raise ManifestError(f"version must be a positive integer, got {version}")
    torchscript = data.get("torchscript")
    files = {}
    for name, digest in _require(data, "files", dict, "").items():
        check_file_name(name, "files")
        if not isinstance(digest, str) or len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
            raise ManifestError(f"files[{_quoted(name)}] must be a lower-case sha256 hex digest, got {_quoted(digest)}")
        files[name] = digest
    return Manifest(
        name=_require(data, "name", str, ""),
        version=version,
        family=_require(data, "family", str, ""),
        schema=_parse_schema(_require(data, "schema", dict, "")),
        graphs=graphs,
        created_at=_require(data, "created_at", str, ""),
        synthserve_version=_require(data, "synthserve_version", str, ""),
        torchscript=None if torchscript is None else check_file_name(torchscript, "torchscript"),
        calibration=calibration,
        metrics=_optional_object(data, "metrics"),
        training=_optional_object(data, "training"),
        files=files,
        format_version=fmt,
    )


def _parse_schema(raw: dict[str, Any]) -> Schema:
    columns = []
    for i, item in enumerate(_require(raw, "columns", list, "schema.")):
        where = f"schema.columns[{i}]."
        craw = _object(item, where[:-1])
        kind = _require(craw, "kind", str, where)
        if kind not in COLUMN_KINDS:
            raise ManifestError(f"{where}kind: unknown kind {_quoted(kind)} (expected one of {COLUMN_KINDS})")
        categories = craw.get("categories")
        if categories is not None and not isinstance(categories, list):
            raise ManifestError(f"{where}categories must be a list, got {type(categories).__name__}")
        if kind == "categorical" and not categories:
            raise ManifestError(f"{where}categories: a categorical column needs its category labels")
        columns.append(
            Column(
                name=_require(craw, "name", str, where),
                kind=kind,
                dtype=_require(craw, "dtype", str, where),
                categories=_labels(categories, f"{where}categories") if categories is not None else None,
                min=_optional_number(craw, "min", where),
                max=_optional_number(craw, "max", where),
                decimals=_optional_decimals(craw, where),
                step=_step(craw, kind, where),
                missing_rate=_missing_rate(craw, where),
                **_datetime_fields(craw, kind, where),
            )
        )
    if not columns:
        raise ManifestError("schema.columns: no columns")
    label = None
    if raw.get("label") is not None:
        lraw = _require(raw, "label", dict, "schema.")
        classes = _labels(_require(lraw, "classes", list, "schema.label."), "schema.label.classes")
        priors = tuple(_number(p, "schema.label.priors[]") for p in _require(lraw, "priors", list, "schema.label."))
        if len(classes) != len(priors) or not classes:
            raise ManifestError("schema.label: classes and priors must be non-empty and of equal length")
        if any(p < 0 for p in priors) or sum(priors) <= 0:
            raise ManifestError("schema.label.priors must be >= 0 with a positive sum")
        label = LabelSpec(
            _require(lraw, "name", str, "schema.label."), _require(lraw, "dtype", str, "schema.label."), classes, priors
        )
    image_shape = raw.get("image_shape")
    if image_shape is not None:
        if (
            not isinstance(image_shape, list)
            or not image_shape
            or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in image_shape)
        ):
            raise ManifestError(f"schema.image_shape must be a list of positive integers, got {_quoted(image_shape)}")
        if math.prod(image_shape) != len(columns):
            raise ManifestError(f"schema.image_shape {image_shape} does not hold {len(columns)} columns")
    return Schema(tuple(columns), label, tuple(image_shape) if image_shape is not None else None)


def _optional_number(raw: dict[str, Any], key: str, where: str) -> float | None:
    value = raw.get(key)
    return None if value is None else _number(value, f"{where}{key}")


def _optional_decimals(raw: dict[str, Any], where: str) -> int | None:
    value = raw.get("decimals")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_DECIMALS:
        raise ManifestError(f"{where}decimals must be an integer in [0, {MAX_DECIMALS}], got {value!r}")
    return value


def _step(raw: dict[str, Any], kind: str, where: str) -> int:
    value = raw.get("step", 1)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_STEP:
        raise ManifestError(f"{where}step must be an integer in [1, {MAX_STEP}], got {_quoted(value)}")
    if value > 1 and (raw.get("min") is None or (kind != "integer" and raw.get("decimals") is None)):
        raise ManifestError(f"{where}step {value}: a grid needs the column's min and, when continuous, its decimals")
    return value


def _missing_rate(raw: dict[str, Any], where: str) -> float:
    value = raw.get("missing_rate", 0.0)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value < 1.0:
        raise ManifestError(f"{where}missing_rate must be a number in [0, 1), got {value!r}")
    return float(value)


def _datetime_fields(raw: dict[str, Any], kind: str, where: str) -> dict[str, str | None]:
    unit, origin, fmt = raw.get("datetime_unit"), raw.get("datetime_origin"), raw.get("datetime_format")
    if unit is None:
        if origin is not None or fmt is not None:
            raise ManifestError(f"{where}datetime_unit: needed with datetime_origin / datetime_format")
        return {}
    if unit not in DATETIME_UNITS:
        raise ManifestError(f"{where}datetime_unit must be one of {DATETIME_UNITS}, got {unit!r}")
    if kind == "categorical":
        raise ManifestError(f"{where}datetime_unit: a datetime column is integer or continuous, not categorical")
    if not isinstance(origin, str):
        raise ManifestError(f"{where}datetime_origin: a datetime column needs its origin as an ISO 8601 string")
    if fmt is not None and not isinstance(fmt, str):
        raise ManifestError(f"{where}datetime_format must be a strftime string, got {fmt!r}")
    return {"datetime_unit": unit, "datetime_origin": origin, "datetime_format": fmt}


def _parse_tensor(item: Any, where: str) -> TensorSpec:
    raw = _object(item, where[:-1])
    dtype = _require(raw, "dtype", str, where)
    role = _require(raw, "role", str, where)
    if dtype not in TENSOR_DTYPES:
        raise ManifestError(f"{where}dtype: {_quoted(dtype)} is not one of {TENSOR_DTYPES}")
    if role not in TENSOR_ROLES:
        raise ManifestError(f"{where}role: {_quoted(role)} is not one of {TENSOR_ROLES}")
    shape = tuple(_require(raw, "shape", list, where))
    fixed = shape[1:]
    if not shape or shape[0] is not None or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in fixed):
        raise ManifestError(f"{where}shape: {list(shape)} must be [null, positive ints...] (dynamic batch first)")
    distribution = raw.get("distribution")
    if role == "guidance" and (dtype != "float32" or len(shape) != 1):
        raise ManifestError(f"{where}shape: a guidance input is float32 [null] (one weight per row)")
    if role == "noise" and distribution not in ("normal", "uniform"):
        raise ManifestError(f"{where}distribution: noise must be 'normal' or 'uniform', got {distribution!r}")
    return TensorSpec(_require(raw, "name", str, where), dtype, shape, role, distribution)


def _parse_graph(raw: Any, where: str) -> GraphSpec:
    if not isinstance(raw, dict):
        raise ManifestError(f"{where[:-1]} must be an object")
    inputs = tuple(_parse_tensor(t, f"{where}inputs[{i}].") for i, t in enumerate(_require(raw, "inputs", list, where)))
    outputs = tuple(
        _parse_tensor(t, f"{where}outputs[{i}].") for i, t in enumerate(_require(raw, "outputs", list, where))
    )
    return GraphSpec(check_file_name(_require(raw, "file", str, where), f"{where}file"), inputs, outputs)
