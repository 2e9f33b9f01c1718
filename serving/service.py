"""The Synthesizer servicer: messages -> engine calls -> messages. No status codes here (see interceptors)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import grpc
import numpy as np
from google.protobuf import json_format, struct_pb2

from serving import metrics
from serving.budget import sample_bytes, score_bytes
from serving.engine import BalanceSpec, Engine, RowPlan
from serving.errors import InvalidArgument
from serving.proto import synthesizer_pb2 as pb
from serving.proto import synthesizer_pb2_grpc as pb_grpc
from serving.registry import LoadedModel
from serving.tables import decode_labels, decode_table, encode_table
from synthserve.contract import BALANCE_SAMPLING, PLAIN_SAMPLING, SamplingOptions, Schema

OFF_LOOP_VALUES = 1 << 18  # tables of more values (1 MB of float32) are encoded in a worker thread
_StreamMessage = TypeVar("_StreamMessage", pb.SampleStreamResponse, pb.BalanceResponse)

__all__ = ["SynthesizerService", "model_info"]

_KINDS = {
    "continuous": pb.COLUMN_KIND_CONTINUOUS,
    "integer": pb.COLUMN_KIND_INTEGER,
    "categorical": pb.COLUMN_KIND_CATEGORICAL,
}
_STRATEGIES = {
    pb.BALANCE_STRATEGY_MATCH_MAJORITY: "match_majority",
    pb.BALANCE_STRATEGY_TARGET_RATIO: "target_ratio",
    pb.BALANCE_STRATEGY_EXPLICIT_COUNTS: "explicit_counts",
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


async def _encode(schema: Schema, rows: np.ndarray, labels: np.ndarray | None, out: pb.Table) -> None:
    """`encode_table` into `out`; off the event loop for large tables, so health checks and other calls are not
    held while a large response is finished and assembled (tens of milliseconds per million values)."""
    if rows.size < OFF_LOOP_VALUES:
        encode_table(schema, rows, labels, out=out)
    else:
        await asyncio.to_thread(encode_table, schema, rows, labels, out)


def _deadline(context: grpc.aio.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else asyncio.get_running_loop().time() + remaining


def _condition(request: pb.SampleRequest | pb.SampleStreamRequest) -> tuple[str | None, dict[str, float] | None]:
    which = request.WhichOneof("condition")
    if which == "label":
        return request.label, None
    if which == "proportions":
        return None, dict(request.proportions.weights)
    return None, None


def _echo(options: SamplingOptions) -> pb.SamplingOptions:
    return pb.SamplingOptions(temperature=options.temperature, best_of=options.best_of)


class SynthesizerService(pb_grpc.SynthesizerServicer):
    def __init__(self, engine: Engine, balance_sampling: SamplingOptions = BALANCE_SAMPLING) -> None:
        self._engine = engine
        self._balance_sampling = balance_sampling  # for the fields a Balance request leaves out

    def _sampling(
        self, model: LoadedModel, options: pb.SamplingOptions, defaults: SamplingOptions = PLAIN_SAMPLING
    ) -> SamplingOptions:
        return self._engine.sampling_options(
            model,
            options.temperature if options.HasField("temperature") else None,
            options.best_of if options.HasField("best_of") else None,
            defaults,
        )

    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        registry = self._engine.registry
        return pb.ListModelsResponse(
            models=[model_info(registry.get(name), registry.versions(name)) for name in registry.names()]
        )

    async def GetModel(self, request: pb.GetModelRequest, context: grpc.aio.ServicerContext) -> pb.GetModelResponse:
        registry = self._engine.registry
        model = registry.get(request.model, request.version)
        return pb.GetModelResponse(model=model_info(model, registry.versions(model.name)))

    def _plan_sample(
        self, request: pb.SampleRequest | pb.SampleStreamRequest, *, stream: bool
    ) -> tuple[LoadedModel, RowPlan]:
        """The model and row plan of a Sample or SampleStream request, checked against its row limit."""
        model = self._engine.registry.get(request.model, request.version)
        label, proportions = _condition(request)
        limits = self._engine.limits
        plan = self._engine.plan_sample(
            model,
            request.num_rows,
            label=label,
            proportions=proportions,
            seed=request.seed if request.HasField("seed") else None,
            max_rows=limits.max_rows_per_stream if stream else limits.max_rows_per_request,
            limit_name="max_rows_per_stream" if stream else "max_rows_per_request",
            sampling=self._sampling(model, request.sampling),
        )
        return model, plan

    async def _stream_rows(
        self,
        model: LoadedModel,
        plan: RowPlan,
        chunk_rows: int,
        context: grpc.aio.ServicerContext,
        message_type: type[_StreamMessage],
    ) -> AsyncIterator[_StreamMessage]:
        """The plan's rows as labelled chunks of SampleStream or Balance, counted as generated."""
        generated = metrics.child(metrics.ROWS_GENERATED, model.name)
        sampling = _echo(plan.sampling)
        async for start, rows, labels in self._engine.stream(plan, chunk_rows, _deadline(context)):
            generated.inc(len(rows))
            message = message_type(version=model.version, seed=plan.seed, start_row=start, sampling=sampling)
            await _encode(model.manifest.schema, rows, labels, message.rows)
            yield message

    async def Sample(self, request: pb.SampleRequest, context: grpc.aio.ServicerContext) -> pb.SampleResponse:
        model, plan = self._plan_sample(request, stream=False)
        schema = model.manifest.schema
        with self._engine.budget.hold(sample_bytes(schema, plan.n_rows, plan.sampling.best_of), "num_rows"):
            rows, labels = await self._engine.generate(plan, 0, plan.n_rows, _deadline(context))
            metrics.child(metrics.ROWS_GENERATED, model.name).inc(plan.n_rows)
            response = pb.SampleResponse(version=model.version, seed=plan.seed, sampling=_echo(plan.sampling))
            await _encode(schema, rows, labels, response.rows)
        return response

    async def SampleStream(
        self, request: pb.SampleStreamRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.SampleStreamResponse]:
        model, plan = self._plan_sample(request, stream=True)
        async for message in self._stream_rows(model, plan, request.chunk_rows, context, pb.SampleStreamResponse):
            yield message

    async def Balance(
        self, request: pb.BalanceRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.BalanceResponse]:
        model = self._engine.registry.get(request.model, request.version)
        strategy = _STRATEGIES.get(request.strategy)
        if strategy is None:
            raise InvalidArgument("strategy must be MATCH_MAJORITY, TARGET_RATIO or EXPLICIT_COUNTS")
        spec = BalanceSpec(
            strategy=strategy,
            class_counts=dict(request.class_counts),
            target_ratio=request.target_ratio,
            explicit_counts=dict(request.explicit_counts),
        )
        sampling = self._sampling(model, request.sampling, self._balance_sampling)
        plan = self._engine.plan_balance(model, spec, request.seed if request.HasField("seed") else None, sampling)
        if plan.n_rows == 0:
            yield pb.BalanceResponse(
                version=model.version, seed=plan.seed, start_row=0, rows=pb.Table(num_rows=0), sampling=_echo(sampling)
            )
            return
        async for message in self._stream_rows(model, plan, request.chunk_rows, context, pb.BalanceResponse):
            yield message

    async def ScoreDensity(
        self, request: pb.ScoreDensityRequest, context: grpc.aio.ServicerContext
    ) -> pb.ScoreDensityResponse:
        model = self._engine.registry.get(request.model, request.version)
        self._engine.require(model, "log_prob")
        threshold = None
        if request.HasField("fpr"):
            calibration = model.manifest.calibration
            if calibration is None:
                raise InvalidArgument(f"fpr: model {model.name!r} has no calibration")
            if not calibration.fpr[0] <= request.fpr <= calibration.fpr[-1]:
                raise InvalidArgument(
                    f"fpr must be within the calibrated range [{calibration.fpr[0]}, {calibration.fpr[-1]}], "
                    f"got {request.fpr}"
                )
            threshold = calibration.threshold(request.fpr)
        rows = decode_table(model.manifest.schema, request.rows, self._engine.limits.max_rows_per_request)
        row_bytes = 5 + 8 * model.manifest.schema.n_classes  # log p, flag, and the two [C] matrices
        self._engine.check_response_size("rows.num_rows", len(rows), row_bytes)
        seed = request.seed if request.HasField("seed") else 0
        outputs = 1 + 2 * model.manifest.schema.n_classes
        with self._engine.budget.hold(score_bytes(model.manifest.schema, len(rows), outputs), "rows.num_rows"):
            scores = await self._engine.score(model, rows, seed, _deadline(context), request.start_row)
        metrics.child(metrics.ROWS_SCORED, model.name).inc(len(rows))
        response = pb.ScoreDensityResponse(
            version=model.version,
            num_rows=len(rows),
            num_classes=model.manifest.schema.n_classes,
            log_density=scores.log_density.astype("<f4", copy=False).tobytes(),
        )
        if request.include_class_log_density:
            response.class_log_density = scores.class_log_density.astype("<f4", copy=False).tobytes()
        if request.include_posteriors:
            response.posteriors = scores.posteriors.astype("<f4", copy=False).tobytes()
        if threshold is not None:
            response.threshold = threshold
            # NaN-safe: a row whose density is not a number (far outside anything seen) is flagged, never passed.
            response.is_anomaly = (~(scores.log_density >= threshold)).astype("u1").tobytes()
        return response

    async def Encode(self, request: pb.EncodeRequest, context: grpc.aio.ServicerContext) -> pb.EncodeResponse:
        model = self._engine.registry.get(request.model, request.version)
        self._engine.require(model, "encode")
        schema = model.manifest.schema
        rows = decode_table(schema, request.rows, self._engine.limits.max_rows_per_request)
        labels = decode_labels(
            schema, request.rows, required="label" in {t.role for t in model.manifest.graphs["encode"].inputs}
        )
        self._engine.check_response_size("rows.num_rows", len(rows), 4 * model.latent_dim)
        seed = request.seed if request.HasField("seed") else 0
        with self._engine.budget.hold(score_bytes(schema, len(rows), model.latent_dim), "rows.num_rows"):
            latent = await self._engine.encode(model, rows, labels, seed, _deadline(context), request.start_row)
        metrics.child(metrics.ROWS_SCORED, model.name).inc(len(rows))
        return pb.EncodeResponse(
            version=model.version,
            num_rows=len(rows),
            latent_dim=latent.shape[1],
            latent=latent.astype("<f4", copy=False).tobytes(),
        )
