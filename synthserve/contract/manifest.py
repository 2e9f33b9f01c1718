"""`manifest.json`: the single description of an exported model that the server reads.

`training` builds a `Manifest` and writes it with `Manifest.to_json`; `serving` (and the TorchServe
handler) read it with `load_manifest`, which refuses unknown format versions and malformed files with a
message naming the field. docs/model_store.md explains every field.
"""

from __future__ import annotations

import bisect
import functools
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "COLUMN_KINDS",
    "DATETIME_UNITS",
    "FORMAT_VERSION",
    "GRAPH_NAMES",
    "MANIFEST_FILE",
    "MAX_DECIMALS",
    "Calibration",
    "Column",
    "GraphSpec",
    "LabelSpec",
    "Manifest",
    "ManifestError",
    "Schema",
    "TensorSpec",
    "load_manifest",
]

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
GRAPH_NAMES = ("sample", "log_prob", "encode")
COLUMN_KINDS = ("continuous", "integer", "categorical")
TENSOR_ROLES = ("noise", "label", "rows", "output")
TENSOR_DTYPES = ("float32", "int64")
DATETIME_UNITS = ("D", "h", "m", "s", "ms", "us")
MAX_DECIMALS = 12


class ManifestError(ValueError):
    """A manifest that this version of synthserve cannot use; the message names the field."""


@dataclass(frozen=True)
class Column:
    """One feature column, in the order the graphs' `rows` tensor holds them."""

    name: str
    kind: str  # continuous | integer | categorical
    dtype: str  # pandas dtype of the training data: float64, int64, object, bool, ...
    categories: tuple[Any, ...] | None = None  # categorical: labels in code order (code = index)
    min: float | None = None  # continuous/integer: range seen in training (rows never leave it)
    max: float | None = None
    decimals: int | None = None  # continuous: values are rounded to this many decimals (None: not rounded)
    missing_rate: float = 0.0  # share of training rows without a value; > 0: rows may have gaps (NaN)
    # Datetime columns (kind integer or continuous): a value v is datetime_origin + v * datetime_unit, rendered
    # with datetime_format (strftime; None: returned as datetime64).
    datetime_unit: str | None = None  # numpy unit: D, h, m, s, ms, us
    datetime_origin: str | None = None  # ISO 8601
    datetime_format: str | None = None

    @property
    def nullable(self) -> bool:
        return self.missing_rate > 0.0


@dataclass(frozen=True)
class LabelSpec:
    """The label column: class labels in index order (the graphs' `label` input) and training priors."""

    name: str
    dtype: str
    classes: tuple[Any, ...]
    priors: tuple[float, ...]


@dataclass(frozen=True)
class Schema:
    columns: tuple[Column, ...]
    label: LabelSpec | None = None
    image_shape: tuple[int, ...] | None = None  # the columns, in order, are the pixels of one image

    @property
    def width(self) -> int:
        return len(self.columns)

    @property
    def n_classes(self) -> int:
        """Classes of the density outputs: 1 for an unconditional model."""
        return len(self.label.classes) if self.label is not None else 1


@dataclass(frozen=True)
class TensorSpec:
    """A graph input or output. `shape[0]` is None: the dynamic batch axis."""

    name: str
    dtype: str  # float32 | int64
    shape: tuple[int | None, ...]
    role: str  # noise | label | rows | output
    distribution: str | None = None  # noise only: normal | uniform (synthserve.contract.noise)

    # Cached (frozen specs never change): the server reads these for every request.
    @functools.cached_property
    def row_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.shape[1:] if d is not None)


@dataclass(frozen=True)
class GraphSpec:
    """One exported function: ONNX file, inputs in call order, outputs in return order."""

    file: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @functools.cached_property
    def noise_inputs(self) -> tuple[TensorSpec, ...]:
        """Noise inputs in stream order: the j-th draws from noise stream j."""
        return tuple(t for t in self.inputs if t.role == "noise")

    @functools.cached_property
    def _names_by_role(self) -> dict[str, str]:
        names: dict[str, str] = {}
        for tensor in self.inputs:
            names.setdefault(tensor.role, tensor.name)
        return names

    def input_named(self, role: str) -> str | None:
        """The name of the (first) input with `role` (label, rows, ...), None when the graph has none."""
        return self._names_by_role.get(role)


@dataclass(frozen=True)
class Calibration:
    """Held-out log-density quantiles: a fraction `fpr[i]` of held-out rows has log p below `log_prob_quantiles[i]`."""

    fpr: tuple[float, ...]
    log_prob_quantiles: tuple[float, ...]
    n_heldout: int

    def threshold(self, fpr: float) -> float:
        """The log-density below which a row is flagged at false-positive rate `fpr`.

        Interpolates linearly in log(fpr) between stored points; `fpr` must lie within them.
        """
        lo, hi = self.fpr[0], self.fpr[-1]
        if not lo <= fpr <= hi:
            raise ValueError(f"fpr must be within [{lo}, {hi}] (the calibrated range), got {fpr}")
        i = bisect.bisect_left(self.fpr, fpr)
        if self.fpr[i] == fpr:
            return self.log_prob_quantiles[i]
        x0, x1 = math.log(self.fpr[i - 1]), math.log(self.fpr[i])
        y0, y1 = self.log_prob_quantiles[i - 1], self.log_prob_quantiles[i]
        return y0 + (y1 - y0) * (math.log(fpr) - x0) / (x1 - x0)


@dataclass(frozen=True)
class Manifest:
    name: str
    version: int
    family: str  # vae | gan | flow | ...
    schema: Schema
    graphs: dict[str, GraphSpec]  # keys from GRAPH_NAMES; the capabilities
    created_at: str  # ISO 8601, UTC
    synthserve_version: str
    torchscript: str | None = None  # one TorchScript module; its methods are named like the graphs
    calibration: Calibration | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)  # the config that rebuilds the model
    files: dict[str, str] = field(default_factory=dict)  # file name -> sha256 hex
    format_version: int = FORMAT_VERSION

    @property
    def capabilities(self) -> tuple[str, ...]:
        return tuple(g for g in GRAPH_NAMES if g in self.graphs)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["capabilities"] = list(self.capabilities)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        return _parse_manifest(data)


def load_manifest(path: str | Path) -> Manifest:
    """Read and validate `manifest.json` (a file, or the version directory holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ManifestError(f"{path}: no manifest") from exc
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path}: not valid JSON ({exc})") from exc
    try:
        return _parse_manifest(data)
    except ManifestError as exc:
        raise ManifestError(f"{path}: {exc}") from exc


def _require(data: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in data:
        raise ManifestError(f"missing field {where}{key}")
    value = data[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ManifestError(f"field {where}{key} has the wrong type ({type(value).__name__})")
    return value


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
            raise ManifestError(f"graphs.{gname}: unknown graph (expected one of {GRAPH_NAMES})")
        graphs[gname] = _parse_graph(graw, f"graphs.{gname}.")
    if "sample" not in graphs:
        raise ManifestError("graphs.sample: every model must export a sample graph")
    declared = data.get("capabilities")
    if declared is not None and sorted(declared) != sorted(graphs):
        raise ManifestError(f"capabilities {declared} do not match graphs {sorted(graphs)}")
    calibration = None
    if data.get("calibration") is not None:
        craw = _require(data, "calibration", dict, "")
        fpr = tuple(float(v) for v in _require(craw, "fpr", list, "calibration."))
        quantiles = tuple(float(v) for v in _require(craw, "log_prob_quantiles", list, "calibration."))
        if len(fpr) != len(quantiles) or len(fpr) < 2 or list(fpr) != sorted(fpr):
            raise ManifestError("calibration: fpr must be increasing and as long as log_prob_quantiles (>= 2)")
        calibration = Calibration(fpr, quantiles, int(_require(craw, "n_heldout", int, "calibration.")))
    version = _require(data, "version", int, "")
    if version < 1:
        raise ManifestError(f"version must be a positive integer, got {version}")
    return Manifest(
        name=_require(data, "name", str, ""),
        version=version,
        family=_require(data, "family", str, ""),
        schema=_parse_schema(_require(data, "schema", dict, "")),
        graphs=graphs,
        created_at=_require(data, "created_at", str, ""),
        synthserve_version=_require(data, "synthserve_version", str, ""),
        torchscript=data.get("torchscript"),
        calibration=calibration,
        metrics=dict(data.get("metrics") or {}),
        training=dict(data.get("training") or {}),
        files={str(k): str(v) for k, v in _require(data, "files", dict, "").items()},
        format_version=fmt,
    )


def _parse_schema(raw: dict[str, Any]) -> Schema:
    columns = []
    for i, craw in enumerate(_require(raw, "columns", list, "schema.")):
        where = f"schema.columns[{i}]."
        kind = _require(craw, "kind", str, where)
        if kind not in COLUMN_KINDS:
            raise ManifestError(f"{where}kind: unknown kind {kind!r} (expected one of {COLUMN_KINDS})")
        categories = craw.get("categories")
        if kind == "categorical" and not categories:
            raise ManifestError(f"{where}categories: a categorical column needs its category labels")
        columns.append(
            Column(
                name=_require(craw, "name", str, where),
                kind=kind,
                dtype=_require(craw, "dtype", str, where),
                categories=tuple(categories) if categories is not None else None,
                min=_optional_number(craw, "min", where),
                max=_optional_number(craw, "max", where),
                decimals=_optional_decimals(craw, where),
                missing_rate=_missing_rate(craw, where),
                **_datetime_fields(craw, kind, where),
            )
        )
    if not columns:
        raise ManifestError("schema.columns: no columns")
    label = None
    if raw.get("label") is not None:
        lraw = _require(raw, "label", dict, "schema.")
        classes = tuple(_require(lraw, "classes", list, "schema.label."))
        priors = tuple(float(p) for p in _require(lraw, "priors", list, "schema.label."))
        if len(classes) != len(priors) or not classes:
            raise ManifestError("schema.label: classes and priors must be non-empty and of equal length")
        label = LabelSpec(
            _require(lraw, "name", str, "schema.label."), _require(lraw, "dtype", str, "schema.label."), classes, priors
        )
    image_shape = raw.get("image_shape")
    if image_shape is not None and math.prod(image_shape) != len(columns):
        raise ManifestError(f"schema.image_shape {image_shape} does not hold {len(columns)} columns")
    return Schema(tuple(columns), label, tuple(image_shape) if image_shape is not None else None)


def _optional_number(raw: dict[str, Any], key: str, where: str) -> float | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ManifestError(f"{where}{key} must be a finite number, got {value!r}")
    return float(value)


def _optional_decimals(raw: dict[str, Any], where: str) -> int | None:
    value = raw.get("decimals")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_DECIMALS:
        raise ManifestError(f"{where}decimals must be an integer in [0, {MAX_DECIMALS}], got {value!r}")
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


def _parse_tensor(raw: dict[str, Any], where: str) -> TensorSpec:
    dtype = _require(raw, "dtype", str, where)
    role = _require(raw, "role", str, where)
    if dtype not in TENSOR_DTYPES:
        raise ManifestError(f"{where}dtype: {dtype!r} is not one of {TENSOR_DTYPES}")
    if role not in TENSOR_ROLES:
        raise ManifestError(f"{where}role: {role!r} is not one of {TENSOR_ROLES}")
    shape = tuple(_require(raw, "shape", list, where))
    if not shape or shape[0] is not None or any(not isinstance(d, int) or d < 1 for d in shape[1:]):
        raise ManifestError(f"{where}shape: {list(shape)} must be [null, positive ints...] (dynamic batch first)")
    distribution = raw.get("distribution")
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
    return GraphSpec(_require(raw, "file", str, where), inputs, outputs)
