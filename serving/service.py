"""The Synthesizer servicer: messages -> engine calls -> messages. No status codes here (see interceptors)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import grpc
import numpy as np

from serving import metrics
from serving.engine import Engine
from serving.errors import InvalidArgument
from serving.model_info import model_info
from serving.planning import RowPlan, ScorePlan, TableReader
from serving.proto import synthesizer_pb2 as pb
from serving.proto import synthesizer_pb2_grpc as pb_grpc
from serving.registry import LoadedModel
from serving.strategies import STRATEGY_ENUMS, STRATEGY_NAMES
from serving.tables import decode_labels, decode_table
from synthserve.contract import (
    ANOMALY_SCORE,
    BALANCE_SAMPLING,
    LOG_DENSITY,
    PLAIN_SAMPLING,
    SamplingOptions,
    Schema,
    resolve_sampling,
)

# The score an anomaly threshold is on (synthserve.contract.AnomalyThreshold.score) as the API names it.
THRESHOLD_SCORES = {
    ANOMALY_SCORE: pb.ANOMALY_SCORE_KIND_ANOMALY_SCORE,
    LOG_DENSITY: pb.ANOMALY_SCORE_KIND_LOG_DENSITY,
}
OFF_LOOP_VALUES = 1 << 18  # tables of more values (1 MB of float32) are encoded in a worker thread
_StreamMessage = TypeVar("_StreamMessage", pb.SampleStreamResponse, pb.BalanceResponse)

__all__ = ["SynthesizerService"]


async def _encode(model: LoadedModel, rows: np.ndarray, labels: np.ndarray | None, out: pb.Table) -> None:
    """The rows as a Table into `out`; off the event loop for large tables, so health checks and other calls are
    not held while a large response is finished and assembled (tens of milliseconds per million values)."""
    if rows.size < OFF_LOOP_VALUES:
        model.table_encoder.encode(rows, labels, out)
    else:
        await asyncio.to_thread(model.table_encoder.encode, rows, labels, out)


def _deadline(context: grpc.aio.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else asyncio.get_running_loop().time() + remaining


def _value(value: Any) -> Any:
    """A google.protobuf.Value -> the Python value (None when unset)."""
    kind = value.WhichOneof("kind")
    return None if kind in (None, "null_value") else getattr(value, kind)


def _conditions(request: pb.SampleRequest | pb.SampleStreamRequest | pb.BalanceRequest) -> list[dict[str, Any]]:
    """FeatureCondition messages -> the contract's condition mappings (resolve_conditions checks them)."""
    conditions: list[dict[str, Any]] = []
    for condition in request.conditions:
        test = condition.WhichOneof("test")
        if test == "equals":
            conditions.append({"column": condition.column, "equals": _value(condition.equals)})
        elif test == "range":
            conditions.append({"column": condition.column, "low": condition.range.low, "high": condition.range.high})
        else:
            conditions.append({"column": condition.column})
    return conditions


def _partition(request: pb.SampleStreamRequest) -> dict[str, int]:
    return {"chunk_rows": request.chunk_rows, "first_row": request.first_row, "stop_row": request.stop_row}


def _condition(request: pb.SampleRequest | pb.SampleStreamRequest) -> tuple[str | None, dict[str, float] | None]:
    which = request.WhichOneof("condition")
    if which == "label":
        return request.label, None
    if which == "proportions":
        return None, dict(request.proportions.weights)
    return None, None


def _sampling(
    model: LoadedModel, options: pb.SamplingOptions, defaults: SamplingOptions = PLAIN_SAMPLING
) -> SamplingOptions:
    return resolve_sampling(
        model.manifest,
        options.temperature if options.HasField("temperature") else None,
        options.best_of if options.HasField("best_of") else None,
        defaults,
        options.guidance if options.HasField("guidance") else None,
    )


def _echo(options: SamplingOptions) -> pb.SamplingOptions:
    return pb.SamplingOptions(temperature=options.temperature, best_of=options.best_of, guidance=options.guidance)


def _seed(request: Any) -> int | None:
    return request.seed if request.HasField("seed") else None


def _reader(schema: Schema, table: pb.Table, *, with_labels: bool) -> TableReader:
    """The request's table, decoded when the planner asks (with its labels checked where the RPC takes them)."""

    def read(max_rows: int, needs_labels: bool) -> tuple[np.ndarray, np.ndarray | None]:
        rows = decode_table(schema, table, max_rows)
        return rows, decode_labels(schema, table, required=needs_labels) if with_labels else None

    return read


def _floats(values: np.ndarray) -> bytes:
    return values.astype("<f4", copy=False).tobytes()


class SynthesizerService(pb_grpc.SynthesizerServicer):
    def __init__(self, engine: Engine, balance_sampling: SamplingOptions = BALANCE_SAMPLING) -> None:
        self._engine = engine
        self._balance_sampling = balance_sampling  # for the fields a Balance request leaves out

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

    def _plan_sample(self, request: pb.SampleRequest | pb.SampleStreamRequest, *, stream: bool) -> RowPlan:
        model = self._engine.registry.get(request.model, request.version)
        label, proportions = _condition(request)
        return self._engine.planner.sample(
            model,
            request.num_rows,
            label=label,
            proportions=proportions,
            seed=_seed(request),
            sampling=_sampling(model, request.sampling),
            stream=stream,
            conditions=_conditions(request),
            **(_partition(request) if isinstance(request, pb.SampleStreamRequest) else {}),
        )

    def _hold_until_done(self, plan: RowPlan | ScorePlan, context: grpc.aio.ServicerContext) -> None:
        """A unary call's share of the memory budget, until the call ends: grpc serializes and sends the response
        after the handler returns."""
        release = self._engine.reserve(plan)
        context.add_done_callback(lambda _: release())

    async def _stream_rows(
        self, plan: RowPlan, context: grpc.aio.ServicerContext, message_type: type[_StreamMessage]
    ) -> AsyncIterator[_StreamMessage]:
        """The plan's rows as labelled chunks of SampleStream or Balance, counted as generated."""
        model = plan.model
        generated = metrics.child(metrics.ROWS_GENERATED, model.name)
        sampling = _echo(plan.sampling)
        async for start, rows, labels in self._engine.stream(plan, _deadline(context)):
            generated.inc(len(rows))
            message = message_type(version=model.version, seed=plan.seed, start_row=start, sampling=sampling)
            await _encode(model, rows, labels, message.rows)
            yield message

    async def Sample(self, request: pb.SampleRequest, context: grpc.aio.ServicerContext) -> pb.SampleResponse:
        plan = self._plan_sample(request, stream=False)
        model = plan.model
        self._hold_until_done(plan, context)
        rows, labels = await self._engine.rows(plan, _deadline(context))
        metrics.child(metrics.ROWS_GENERATED, model.name).inc(plan.n_rows)
        response = pb.SampleResponse(version=model.version, seed=plan.seed, sampling=_echo(plan.sampling))
        await _encode(model, rows, labels, response.rows)
        return response

    async def SampleStream(
        self, request: pb.SampleStreamRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.SampleStreamResponse]:
        plan = self._plan_sample(request, stream=True)
        async for message in self._stream_rows(plan, context, pb.SampleStreamResponse):
            yield message

    async def Balance(
        self, request: pb.BalanceRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.BalanceResponse]:
        model = self._engine.registry.get(request.model, request.version)
        strategy = STRATEGY_NAMES.get(request.strategy)
        if strategy is None:
            known = ", ".join(name.upper() for name in STRATEGY_ENUMS)
            raise InvalidArgument(f"strategy must be one of {known}, got {request.strategy}")
        plan = self._engine.planner.balance(
            model,
            strategy,
            dict(request.class_counts),
            target_ratio=request.target_ratio,
            explicit_counts=dict(request.explicit_counts),
            seed=_seed(request),
            sampling=_sampling(model, request.sampling, self._balance_sampling),
            chunk_rows=request.chunk_rows,
            conditions=_conditions(request),
        )
        if plan.n_rows == 0:
            yield pb.BalanceResponse(
                version=model.version, seed=plan.seed, rows=pb.Table(num_rows=0), sampling=_echo(plan.sampling)
            )
            return
        async for message in self._stream_rows(plan, context, pb.BalanceResponse):
            yield message

    async def ScoreDensity(
        self, request: pb.ScoreDensityRequest, context: grpc.aio.ServicerContext
    ) -> pb.ScoreDensityResponse:
        model = self._engine.registry.get(request.model, request.version)
        plan = self._engine.planner.score(
            model,
            _reader(model.manifest.schema, request.rows, with_labels=False),
            seed=_seed(request) or 0,
            start_row=request.start_row,
            fpr=request.fpr if request.HasField("fpr") else None,
        )
        self._hold_until_done(plan, context)
        scores = await self._engine.score(plan, _deadline(context))
        metrics.child(metrics.ROWS_SCORED, model.name).inc(len(plan.rows))
        response = pb.ScoreDensityResponse(
            version=model.version,
            num_rows=len(plan.rows),
            num_classes=model.manifest.schema.n_classes,
            log_density=_floats(scores.log_density),
        )
        if request.include_class_log_density:
            response.class_log_density = _floats(scores.class_log_density)
        if request.include_posteriors:
            response.posteriors = _floats(scores.posteriors)
        if scores.anomaly_score is not None:
            response.anomaly_score = _floats(scores.anomaly_score)
        if plan.threshold is not None:
            response.threshold = plan.threshold.value
            response.threshold_score = THRESHOLD_SCORES[plan.threshold.score]
            response.is_anomaly = scores.is_anomaly(plan.threshold).astype("u1").tobytes()
        return response

    async def Encode(self, request: pb.EncodeRequest, context: grpc.aio.ServicerContext) -> pb.EncodeResponse:
        model = self._engine.registry.get(request.model, request.version)
        plan = self._engine.planner.encode(
            model,
            _reader(model.manifest.schema, request.rows, with_labels=True),
            seed=_seed(request) or 0,
            start_row=request.start_row,
        )
        self._hold_until_done(plan, context)
        latent = await self._engine.encode(plan, _deadline(context))
        metrics.child(metrics.ROWS_SCORED, model.name).inc(len(plan.rows))
        return pb.EncodeResponse(
            version=model.version, num_rows=len(plan.rows), latent_dim=latent.shape[1], latent=_floats(latent)
        )
