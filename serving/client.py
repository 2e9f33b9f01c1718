"""Python client: pandas DataFrames with the training data's column names, dtypes and category labels.

The wire format is columnar (one buffer per column, category codes, class indices); the client fetches each
model version's schema once (GetModel) and converts both ways. A version's schema never changes, so it is
cached by (model, version).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import pandas as pd
from google.protobuf import json_format, struct_pb2

from serving.proto import synthesizer_pb2 as pb
from serving.proto import synthesizer_pb2_grpc as pb_grpc
from serving.tls import ClientTls
from synthserve.contract import MISSING_CODE, Column, close_matches
from synthserve.contract.frames import label_codes, series_from_values, values_from_series

__all__ = ["ColumnInfo", "ModelDescription", "SynthClient"]

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
# GetModel tries for the version a response came from. Behind round_robin each call goes to the next server,
# so during a rolling update a server without that version answers NOT_FOUND and a retry reaches one with it.
_DESCRIBE_ATTEMPTS = 8
_STRATEGIES = {
    "match_majority": pb.BALANCE_STRATEGY_MATCH_MAJORITY,
    "target_ratio": pb.BALANCE_STRATEGY_TARGET_RATIO,
    "explicit_counts": pb.BALANCE_STRATEGY_EXPLICIT_COUNTS,
}

_SIZE_SAMPLE_ROWS = 64  # rows encoded to estimate a frame's bytes per row


# A column as the server describes it: the contract's own Column (name, kind, dtype, categories, range,
# decimals, missing rate, datetime format), rebuilt from the ColumnSpec.
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
        missing_rate=spec.missing_rate,
        datetime_unit=spec.datetime_unit or None,
        datetime_origin=spec.datetime_origin or None,
        datetime_format=spec.datetime_format or None,
    )


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
            frame[self.label] = np.asarray(self.classes, dtype=object)[codes]
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


def _label(value: struct_pb2.Value) -> Any:
    """A category or class label; JSON numbers arrive as floats, whole ones were integers in training."""
    item = json_format.MessageToDict(value)
    return int(item) if isinstance(item, float) and item.is_integer() else item


class SynthClient:
    """A synchronous client for one server; safe to share between threads."""

    def __init__(
        self,
        target: str,
        *,
        timeout_s: float | None = None,
        tls: grpc.ChannelCredentials | ClientTls | None = None,
        token: str | None = None,
        max_message_bytes: int = 256 * 1024 * 1024,
        request_bytes: int = 16 * 1024 * 1024,
        lb_policy: str | None = None,
        channel_options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        """`tls`: credentials, or a `ClientTls` naming PEM files (mTLS with a client certificate).
        `lb_policy`: e.g. "round_robin" to spread calls over every address a `dns:///` target resolves to
        (a Kubernetes headless Service); `channel_options` are passed to grpc as they are, last.
        `request_bytes`: `score` and `encode` send tables in requests of about this size (the server's default
        message limit is 32 MiB); the values are those of one request (rows carry their `start_row`)."""
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ]
        if lb_policy is not None:
            options.append(("grpc.lb_policy_name", lb_policy))
        if isinstance(tls, ClientTls):
            options.extend(tls.channel_options())
            tls = tls.credentials()
        options.extend(channel_options)
        self._channel = (
            grpc.secure_channel(target, tls, options=options) if tls else grpc.insecure_channel(target, options=options)
        )
        self._stub = pb_grpc.SynthesizerStub(self._channel)
        self._timeout_s = timeout_s
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None
        self._descriptions: dict[tuple[str, int], ModelDescription] = {}
        self._request_bytes = request_bytes

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> SynthClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: Any, request: Any) -> Any:
        return method(request, timeout=self._timeout_s, metadata=self._metadata)

    def models(self) -> list[ModelDescription]:
        response = self._call(self._stub.ListModels, pb.ListModelsRequest())
        return [ModelDescription.from_proto(info) for info in response.models]

    def describe(self, model: str, version: int | None = None) -> ModelDescription:
        key = (model, version or 0)
        if key not in self._descriptions:
            response = self._call(self._stub.GetModel, pb.GetModelRequest(model=model, version=version or 0))
            description = ModelDescription.from_proto(response.model)
            self._descriptions[key] = description
            self._descriptions.setdefault((model, description.version), description)
        return self._descriptions[key]

    def _describe_served(self, model: str, version: int) -> ModelDescription:
        """The description of the version a response was computed by, which the server that answers GetModel
        may not have loaded (a rolling update behind round_robin): NOT_FOUND is retried on the next server."""
        for _ in range(_DESCRIBE_ATTEMPTS - 1):
            try:
                return self.describe(model, version)
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.NOT_FOUND:
                    raise
        return self.describe(model, version)

    def sample(
        self,
        model: str,
        n: int,
        *,
        label: Any = None,
        proportions: Mapping[Any, float] | None = None,
        seed: int | None = None,
        version: int | None = None,
        temperature: float | None = None,
        best_of: int | None = None,
    ) -> pd.DataFrame:
        """n rows; `frame.attrs` holds the seed, version and sampling options that reproduce them.

        `temperature` (0, 4] scales the model's normal noise; `best_of` k keeps, per row, the one of k candidates
        the model's posterior ranks highest for its class (docs/serving.md)."""
        request = pb.SampleRequest(
            model=model, version=version or 0, num_rows=n, seed=seed, sampling=_sampling(temperature, best_of)
        )
        _set_condition(request, label, proportions)
        response = self._call(self._stub.Sample, request)
        frame = self._describe_served(model, response.version).to_frame(response.rows)
        frame.attrs.update(seed=response.seed, version=response.version, **_options(response.sampling))
        return frame

    def sample_stream(
        self,
        model: str,
        n: int,
        *,
        label: Any = None,
        proportions: Mapping[Any, float] | None = None,
        seed: int | None = None,
        version: int | None = None,
        chunk_rows: int | None = None,
        temperature: float | None = None,
        best_of: int | None = None,
    ) -> Iterator[pd.DataFrame]:
        """The same rows as `sample`, in chunks; each frame's attrs hold seed, version, options and start_row."""
        request = pb.SampleStreamRequest(
            model=model,
            version=version or 0,
            num_rows=n,
            seed=seed,
            chunk_rows=chunk_rows or 0,
            sampling=_sampling(temperature, best_of),
        )
        _set_condition(request, label, proportions)
        for response in self._call(self._stub.SampleStream, request):
            frame = self._describe_served(model, response.version).to_frame(response.rows)
            frame.attrs.update(
                seed=response.seed,
                version=response.version,
                start_row=response.start_row,
                **_options(response.sampling),
            )
            yield frame

    def balance(
        self,
        df: pd.DataFrame,
        label_column: str,
        model: str,
        *,
        strategy: str = "match_majority",
        ratio: float | None = None,
        counts: Mapping[Any, int] | None = None,
        seed: int | None = None,
        version: int | None = None,
        temperature: float | None = None,
        best_of: int | None = None,
    ) -> pd.DataFrame:
        """The synthetic rows that bring `df`'s classes to the strategy's counts, label in `label_column`.

        `best_of` left out takes the server's balance default (`--balance-best-of`); attrs say what was used."""
        if strategy not in _STRATEGIES:
            raise ValueError(f"strategy must be one of {list(_STRATEGIES)}, got {strategy!r}")
        if label_column not in df.columns:
            raise ValueError(f"label_column {label_column!r}: no such column{close_matches(label_column, df.columns)}")
        class_counts = {str(k): int(v) for k, v in df[label_column].value_counts().items()}
        request = pb.BalanceRequest(
            model=model,
            version=version or 0,
            class_counts=class_counts,
            strategy=_STRATEGIES[strategy],
            target_ratio=ratio or 0.0,
            explicit_counts={str(k): int(v) for k, v in (counts or {}).items()},
            seed=seed,
            sampling=_sampling(temperature, best_of),
        )
        frames = []
        response_seed = response_version = None
        options: dict[str, Any] = {}
        for response in self._call(self._stub.Balance, request):
            frames.append(self._describe_served(model, response.version).to_frame(response.rows))
            response_seed, response_version = response.seed, response.version
            options = _options(response.sampling)
        frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        described = self.describe(model) if response_version is None else self._describe_served(model, response_version)
        label = described.label
        if label is not None and label != label_column and label in frame.columns:
            frame = frame.rename(columns={label: label_column})
        frame.attrs.update(seed=response_seed, version=response_version, **options)
        return frame

    def score(
        self,
        model: str,
        df: pd.DataFrame,
        *,
        fpr: float | None = None,
        version: int | None = None,
        seed: int | None = None,
        class_log_density: bool = False,
    ) -> pd.DataFrame:
        """log_density, log_density_<class> (when asked), posterior_<class> and is_anomaly (with fpr), per row."""
        description = self.describe(model, version)
        conditional = description.label is not None
        responses = [
            self._call(
                self._stub.ScoreDensity,
                pb.ScoreDensityRequest(
                    model=model,
                    version=version or 0,
                    rows=table,
                    include_class_log_density=class_log_density and conditional,
                    include_posteriors=conditional,
                    fpr=fpr,
                    seed=seed,
                    start_row=start,
                ),
            )
            for start, table in self._tables(description, df, with_labels=False)
        ]

        def joined(field: str, dtype: str) -> np.ndarray:
            return np.concatenate([np.frombuffer(getattr(r, field), dtype=dtype) for r in responses])

        result = pd.DataFrame({"log_density": joined("log_density", "<f4")}, index=df.index)
        n_classes = responses[0].num_classes
        if responses[0].class_log_density:
            values = joined("class_log_density", "<f4").reshape(-1, n_classes)
            for index, label in enumerate(description.classes):
                result[f"log_density_{label}"] = values[:, index]
        if responses[0].posteriors:
            values = joined("posteriors", "<f4").reshape(-1, n_classes)
            for index, label in enumerate(description.classes):
                result[f"posterior_{label}"] = values[:, index]
        if fpr is not None:
            result["is_anomaly"] = joined("is_anomaly", "u1").astype(bool)
            result.attrs["threshold"] = responses[0].threshold
        return result

    def _tables(
        self, description: ModelDescription, df: pd.DataFrame, *, with_labels: bool
    ) -> Iterator[tuple[int, pb.Table]]:
        """(start_row, Table) pieces of `df` of about `request_bytes` each (one piece for a small frame). The size
        is estimated from the first rows (every value takes a fixed number of bytes), so a large frame is encoded
        once, in its pieces."""
        sample = description.to_table(df.iloc[:_SIZE_SAMPLE_ROWS], with_labels=with_labels)
        row_bytes = sample.ByteSize() / max(1, min(len(df), _SIZE_SAMPLE_ROWS))
        pieces = max(1, math.ceil(row_bytes * len(df) / self._request_bytes))
        if pieces == 1:
            yield 0, sample if len(df) <= _SIZE_SAMPLE_ROWS else description.to_table(df, with_labels=with_labels)
            return
        step = math.ceil(len(df) / pieces)
        for start in range(0, len(df), step):
            yield start, description.to_table(df.iloc[start : start + step], with_labels=with_labels)

    def encode(
        self, model: str, df: pd.DataFrame, *, version: int | None = None, seed: int | None = None
    ) -> np.ndarray:
        """Latent vectors `[len(df), latent_dim]`; conditional models read the label column from `df`."""
        description = self.describe(model, version)
        latents = [
            np.frombuffer(response.latent, dtype="<f4").reshape(response.num_rows, response.latent_dim)
            for response in (
                self._call(
                    self._stub.Encode,
                    pb.EncodeRequest(model=model, version=version or 0, rows=table, seed=seed, start_row=start),
                )
                for start, table in self._tables(description, df, with_labels=True)
            )
        ]
        return latents[0] if len(latents) == 1 else np.concatenate(latents)


def _sampling(temperature: float | None, best_of: int | None) -> pb.SamplingOptions:
    """Only the options the caller set: the server applies its defaults to the rest."""
    options = pb.SamplingOptions()
    if temperature is not None:
        options.temperature = temperature
    if best_of is not None:
        options.best_of = best_of
    return options


def _options(sampling: pb.SamplingOptions) -> dict[str, Any]:
    return {"temperature": sampling.temperature, "best_of": sampling.best_of}


def _set_condition(request: Any, label: Any, proportions: Mapping[Any, float] | None) -> None:
    if label is not None and proportions is not None:
        raise ValueError("give label or proportions, not both")
    if label is not None:
        request.label = str(label)
    elif proportions is not None:
        request.proportions.weights.update({str(k): float(v) for k, v in proportions.items()})
