"""`manifest.json`: the single description of an exported model that the server reads, as types.

`training` builds a `Manifest` and writes it with `Manifest.to_json`; `serving` (and the TorchServe handler) read
it with `synthserve.contract.manifest_reader.load_manifest`, which refuses unknown format versions and malformed
files with a message naming the field. docs/model_store.md explains every field.
"""

from __future__ import annotations

import bisect
import functools
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "COLUMN_KINDS",
    "DATETIME_UNITS",
    "FORMAT_VERSION",
    "GRAPH_NAMES",
    "MANIFEST_FILE",
    "MAX_DECIMALS",
    "MAX_STEP",
    "Calibration",
    "Column",
    "GraphSpec",
    "LabelSpec",
    "Manifest",
    "ManifestError",
    "Schema",
    "TensorSpec",
]

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
GRAPH_NAMES = ("sample", "sample_guided", "log_prob", "encode")
COLUMN_KINDS = ("continuous", "integer", "categorical")
TENSOR_ROLES = ("noise", "label", "rows", "guidance", "output")
TENSOR_DTYPES = ("float32", "int64")
DATETIME_UNITS = ("D", "h", "m", "s", "ms", "us")
MAX_DECIMALS = 12
MAX_STEP = 2**53  # a grid step in units; whole numbers up to here are exact in float64


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
    # Rounded columns (integer, or continuous with decimals): values lie on the grid min + k * step units, a unit
    # being 10**-decimals (1 for integer columns): a column measured in 0.005 steps and written with 3 decimals
    # has step 5. Learned from the training rows (training.data.grid_step); 1 is every unit.
    step: int = 1
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
    role: str  # noise | label | rows | guidance | output
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

    def has_output(self, name: str) -> bool:
        return any(t.name == name for t in self.outputs)


@dataclass(frozen=True)
class Calibration:
    """Held-out quantiles: a fraction `fpr[i]` of held-out rows has log p below `log_prob_quantiles[i]` and, for
    models whose log_prob graph serves an anomaly score, a score above `anomaly_score_quantiles[i]`."""

    fpr: tuple[float, ...]
    log_prob_quantiles: tuple[float, ...]
    n_heldout: int
    anomaly_score_quantiles: tuple[float, ...] | None = None

    def threshold(self, fpr: float) -> float:
        """The log-density below which a row is flagged at false-positive rate `fpr`.

        Interpolates linearly in log(fpr) between stored points; `fpr` must lie within them.
        """
        return self._interpolate(fpr, self.log_prob_quantiles)

    def anomaly_score_threshold(self, fpr: float) -> float:
        """The anomaly score above which a row is flagged at false-positive rate `fpr` (interpolated as above)."""
        if self.anomaly_score_quantiles is None:
            raise ValueError("this calibration has no anomaly-score quantiles")
        return self._interpolate(fpr, self.anomaly_score_quantiles)

    def _interpolate(self, fpr: float, values: tuple[float, ...]) -> float:
        lo, hi = self.fpr[0], self.fpr[-1]
        if not lo <= fpr <= hi:
            raise ValueError(f"fpr must be within [{lo}, {hi}] (the calibrated range), got {fpr}")
        i = bisect.bisect_left(self.fpr, fpr)
        if self.fpr[i] == fpr:
            return values[i]
        x0, x1 = math.log(self.fpr[i - 1]), math.log(self.fpr[i])
        y0, y1 = values[i - 1], values[i]
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
