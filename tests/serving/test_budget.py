"""The memory budget: what it admits and refuses, and that a unary call holds its share until the call ends."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from serving.budget import MemoryBudget, sample_bytes
from serving.config import BatcherConfig, LimitsConfig, RuntimeConfig
from serving.engine import Engine
from serving.errors import InvalidArgument, QueueFull
from serving.proto import synthesizer_pb2 as pb
from serving.proto import synthesizer_pb2_grpc as pb_grpc
from serving.registry import Registry
from serving.service import SynthesizerService
from tests.serving.conftest import ServerThread, make_config
from tests.serving.helpers import table_of

ROWS = 2_000  # rows of each large call below


def test_a_reservation_is_given_back_once_and_refusals_name_the_limit() -> None:
    budget = MemoryBudget(100)
    release = budget.reserve(60, "Sample of 6 rows")
    with pytest.raises(QueueFull, match=r"hold ~60 bytes; Sample of 5 rows needs ~50 more, beyond max_inflight_bytes"):
        budget.reserve(50, "Sample of 5 rows")
    with pytest.raises(InvalidArgument, match=r"Sample of 11 rows would hold ~110 bytes, beyond max_inflight_bytes"):
        budget.reserve(110, "Sample of 11 rows")
    release()
    release()  # a second call gives nothing back twice
    assert budget.held == 0
    with budget.hold(100, "Sample of 10 rows"):
        assert budget.held == 100
    assert budget.held == 0


class _Context:
    """What the handlers use of grpc.aio.ServicerContext; `end()` is the call's end, after the response is sent."""

    def __init__(self) -> None:
        self.callbacks: list[Callable[[Any], None]] = []

    def time_remaining(self) -> float | None:
        return None

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        self.callbacks.append(callback)

    def end(self) -> None:
        for callback in self.callbacks:
            callback(self)


def _unary_requests() -> dict[str, Any]:
    rows = np.column_stack([np.linspace(-2, 2, ROWS), np.linspace(1, 3, ROWS), np.arange(ROWS) % 3])
    return {
        "Sample": pb.SampleRequest(model="gauss", num_rows=ROWS, seed=3),
        "ScoreDensity": pb.ScoreDensityRequest(model="gauss", rows=table_of(rows)),
        "Encode": pb.EncodeRequest(model="gauss", rows=table_of(rows, np.arange(ROWS) % 2)),
    }


@pytest.mark.parametrize("method", ["Sample", "ScoreDensity", "Encode"])
def test_a_unary_call_holds_its_share_after_its_handler_returns_until_the_call_ends(store: Path, method: str) -> None:
    # grpc serializes and sends the response after the handler returns: until then the response and its
    # serialized copy are in memory, so the budget must still count them (a burst under load overran it).
    engine = Engine(
        Registry.scan(store, RuntimeConfig()), BatcherConfig(), LimitsConfig(), ThreadPoolExecutor(2), slots=2
    )
    service, context = SynthesizerService(engine), _Context()

    async def call() -> None:
        response = await getattr(service, method)(_unary_requests()[method], context)
        assert response.ByteSize() > 4 * ROWS
        assert engine.budget.held > 4 * ROWS  # returned, not yet sent: still held
        context.end()
        assert engine.budget.held == 0
        await engine.close()

    asyncio.run(call())


@pytest.fixture(scope="module")
def small_budget(store: Path) -> Iterator[ServerThread]:
    """A real server whose budget admits one of the large Samples at a time."""
    config = make_config(store)
    schema = Registry.scan(store, RuntimeConfig()).get("gauss").manifest.schema
    limits = dataclasses.replace(config.limits, max_inflight_bytes=int(1.5 * sample_bytes(schema, ROWS)))
    running = ServerThread(dataclasses.replace(config, limits=limits))
    yield running
    running.stop()


def _held(server: ServerThread) -> int:
    """The server's budget in use, once its calls have ended (done callbacks run just after the client's end)."""
    deadline = time.monotonic() + 5
    while server.server.engine.budget.held and time.monotonic() < deadline:
        time.sleep(0.01)
    return server.server.engine.budget.held


def test_a_real_server_gives_the_share_back_after_success_refusal_deadline_and_cancellation(
    small_budget: ServerThread,
) -> None:
    with grpc.insecure_channel(small_budget.target) as channel:
        stub = pb_grpc.SynthesizerStub(channel)
        for seed in range(20):  # each needs two thirds of the budget: a share not given back refuses the next
            assert stub.Sample(pb.SampleRequest(model="gauss", num_rows=ROWS, seed=seed)).rows.num_rows == ROWS
        assert _held(small_budget) == 0
        infinite = np.zeros((ROWS, 3))
        infinite[-1, 0] = np.inf
        with pytest.raises(grpc.RpcError) as refused:
            stub.ScoreDensity(pb.ScoreDensityRequest(model="gauss", rows=table_of(infinite)))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert _held(small_budget) == 0
        outcomes = set()
        for seed in range(10):  # a deadline that ends calls at any point, and calls the client cancels
            late = stub.Sample.future(pb.SampleRequest(model="gauss", num_rows=ROWS, seed=seed), timeout=0.0005)
            outcomes.add(late.exception().code() if late.exception() else grpc.StatusCode.OK)
            stub.Sample.future(pb.SampleRequest(model="gauss", num_rows=ROWS, seed=seed)).cancel()
            assert _held(small_budget) == 0
        assert outcomes <= {grpc.StatusCode.OK, grpc.StatusCode.DEADLINE_EXCEEDED}
        assert stub.Sample(pb.SampleRequest(model="gauss", num_rows=ROWS, seed=2)).rows.num_rows == ROWS
