"""A served model version as the API describes it: `ModelInfo` (schema, capabilities, calibration, metrics)."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format, struct_pb2

from serving.proto import synthesizer_pb2 as pb
from serving.registry import LoadedModel

__all__ = ["model_info"]

_KINDS = {
    "continuous": pb.COLUMN_KIND_CONTINUOUS,
    "integer": pb.COLUMN_KIND_INTEGER,
    "categorical": pb.COLUMN_KIND_CATEGORICAL,
}


def _value(item: Any) -> struct_pb2.Value:
    value = struct_pb2.Value()
    json_format.ParseDict(item, value)
    return value


def model_info(model: LoadedModel, versions: list[int]) -> pb.ModelInfo:
    manifest = model.manifest
    schema = pb.Schema(image_shape=list(manifest.schema.image_shape or ()))
    for column in manifest.schema.columns:
        spec = schema.columns.add(name=column.name, kind=_KINDS[column.kind], dtype=column.dtype)
        spec.categories.extend(_value(c) for c in column.categories or ())
        if column.min is not None:
            spec.min = float(column.min)
        if column.max is not None:
            spec.max = float(column.max)
        if column.decimals is not None:
            spec.decimals = column.decimals
        spec.step = column.step
        spec.missing_rate = column.missing_rate
        if column.datetime_unit is not None:
            spec.datetime_unit = column.datetime_unit
            spec.datetime_origin = column.datetime_origin or ""
            spec.datetime_format = column.datetime_format or ""
    if manifest.schema.label is not None:
        label = manifest.schema.label
        schema.label.CopyFrom(
            pb.LabelSpec(
                name=label.name, dtype=label.dtype, classes=[_value(c) for c in label.classes], priors=label.priors
            )
        )
    info = pb.ModelInfo(
        name=model.name,
        version=model.version,
        versions=versions,
        family=manifest.family,
        schema=schema,
        capabilities=list(manifest.capabilities),
        created_at=manifest.created_at,
        latent_dim=model.latent_dim,
    )
    if manifest.calibration is not None:
        calibration = manifest.calibration
        info.calibration.CopyFrom(
            pb.Calibration(
                fpr=calibration.fpr,
                log_prob_quantiles=calibration.log_prob_quantiles,
                num_heldout=calibration.n_heldout,
                anomaly_score_quantiles=calibration.anomaly_score_quantiles or (),
            )
        )
    json_format.ParseDict(_json_safe(manifest.metrics), info.metrics)
    return info


def _json_safe(value: Any) -> Any:
    """Struct holds only JSON: non-finite floats become strings."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if (isinstance(value, float) and value != value) or value in (float("inf"), float("-inf")):
        return str(value)
    return value
