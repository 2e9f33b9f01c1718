"""A model version as the client sees it: the server's `ModelInfo` rebuilt as the contract's own types, and the
conversion between its wire `Table`s and pandas DataFrames with the training data's names, dtypes and labels.

A version's schema never changes, so `SynthClient` fetches each description once (GetModel) and caches it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from google.protobuf import json_format, struct_pb2

from serving.proto import synthesizer_pb2 as pb
from synthserve.contract import MISSING_CODE, Column
from synthserve.contract.frames import label_codes, series_from_values, values_from_series

__all__ = ["ColumnInfo", "ModelDescription"]

_KIND_NAMES = {
    pb.COLUMN_KIND_CONTINUOUS: "continuous",
    pb.COLUMN_KIND_INTEGER: "integer",
    pb.COLUMN_KIND_CATEGORICAL: "categorical",
}
_WIRE_TYPES = {
    pb.VALUE_TYPE_FLOAT32: "<f4",
    pb.VALUE_TYPE_FLOAT64: "<f8",
    pb.VALUE_TYPE_INT32: "<i4",
    pb.VALUE_TYPE_INT64: "<i8",
}

# A column as the server describes it: the contract's own Column (name, kind, dtype, categories, range,
# decimals, grid step, missing rate, datetime format), rebuilt from the ColumnSpec.
ColumnInfo = Column


def _column(spec: pb.ColumnSpec) -> Column:
    return Column(
        spec.name,
        _KIND_NAMES.get(spec.kind, "continuous"),
        spec.dtype,
        tuple(_label(v) for v in spec.categories) if spec.categories else None,
        min=spec.min if spec.HasField("min") else None,
        max=spec.max if spec.HasField("max") else None,
        decimals=spec.decimals if spec.HasField("decimals") else None,
        step=max(1, spec.step),
        missing_rate=spec.missing_rate,
        datetime_unit=spec.datetime_unit or None,
        datetime_origin=spec.datetime_origin or None,
        datetime_format=spec.datetime_format or None,
    )


def _label(value: struct_pb2.Value) -> Any:
    """A category or class label; JSON numbers arrive as floats, whole ones were integers in training."""
    item = json_format.MessageToDict(value)
    return int(item) if isinstance(item, float) and item.is_integer() else item


@dataclass(frozen=True)
class ModelDescription:
    """One model version as the server describes it."""

    name: str
    version: int
    versions: tuple[int, ...]
    family: str
    capabilities: tuple[str, ...]
    columns: tuple[ColumnInfo, ...]
    label: str | None
    classes: tuple[Any, ...]
    priors: tuple[float, ...]
    image_shape: tuple[int, ...] | None
    calibration_fpr: tuple[float, ...]
    latent_dim: int
    metrics: dict[str, Any]

    @classmethod
    def from_proto(cls, info: pb.ModelInfo) -> ModelDescription:
        schema = info.schema
        columns = tuple(_column(c) for c in schema.columns)
        has_label = schema.HasField("label")
        return cls(
            name=info.name,
            version=info.version,
            versions=tuple(info.versions),
            family=info.family,
            capabilities=tuple(info.capabilities),
            columns=columns,
            label=schema.label.name if has_label else None,
            classes=tuple(_label(v) for v in schema.label.classes) if has_label else (),
            priors=tuple(schema.label.priors) if has_label else (),
            image_shape=tuple(schema.image_shape) or None,
            calibration_fpr=tuple(info.calibration.fpr),
            latent_dim=info.latent_dim,
            metrics=json_format.MessageToDict(info.metrics),
        )

    def to_frame(self, table: pb.Table) -> pd.DataFrame:
        """Table -> DataFrame with training column names, dtypes, labels and datetime formats (label column last)."""
        data: dict[str, Any] = {}
        for column, spec in zip(table.columns, self.columns):
            values = np.frombuffer(column.values, dtype=_WIRE_TYPES[column.value_type])
            data[spec.name] = series_from_values(spec, values)
        frame = pd.DataFrame(data, columns=[c.name for c in self.columns])
        codes = np.frombuffer(table.labels, dtype="<i4")
        if self.label is not None and len(codes) == len(frame):  # conditional models label every row
            # The classes' own dtype (int64 for whole-number labels, as in the training table; object for text).
            frame[self.label] = pd.Series(self.classes).to_numpy()[codes]
        return frame

    def to_table(self, frame: pd.DataFrame, *, with_labels: bool = False) -> pb.Table:
        """DataFrame -> Table: the schema's columns (missing ones are left for the server to name), codes for
        labels, datetimes as units since their origin, NaN (or code -1) for gaps. ValueError names a bad column."""
        table = pb.Table(num_rows=len(frame))
        for spec in self.columns:
            if spec.name not in frame.columns:
                continue
            values = values_from_series(spec, frame[spec.name])
            if spec.kind == "categorical":
                codes = np.where(np.isnan(values), MISSING_CODE, values).astype("<i8")
                table.columns.add(name=spec.name, value_type=pb.VALUE_TYPE_INT64, values=codes.tobytes())
            else:
                table.columns.add(
                    name=spec.name, value_type=pb.VALUE_TYPE_FLOAT64, values=values.astype("<f8").tobytes()
                )
        if with_labels and self.label is not None and self.label in frame.columns:
            codes = label_codes(frame[self.label], self.classes, self.label, allow_missing=False)
            table.labels = codes.astype("<i4").tobytes()
        return table
