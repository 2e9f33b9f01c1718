"""Fuzzing: >= 10,000 malformed or extreme requests across every RPC against one real server on 127.0.0.1.

Promise: no crash, no INTERNAL/UNKNOWN, every refusal names the field it refuses (gRPC's own message-size
refusal names the limit), and afterwards a valid request returns the same bytes as before the storm.
Requests go out in concurrent waves over one `grpc.aio` channel; Hypothesis draws each wave.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serving.config import BatcherConfig, LimitsConfig, ServerConfig
from serving.proto import synthesizer_pb2 as pb
from serving.proto import synthesizer_pb2_grpc as pb_grpc
from tests.reliability.fuzz_requests import LIMITS, Case, cases
from tests.serving.conftest import ServerThread
from tests.serving.helpers import rows_of, table_of

WAVE = 200
REFUSALS = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION}
STREAMING = {"SampleStream", "Balance"}
MATCH_MAJORITY = pb.BALANCE_STRATEGY_MATCH_MAJORITY


@dataclasses.dataclass
class Tally:
    sent: int = 0
    codes: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    methods: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    broken: list[str] = dataclasses.field(default_factory=list)


@pytest.fixture(scope="module")
def fuzz_server(store: Path) -> Iterator[ServerThread]:
    config = ServerConfig(
        model_store=store,
        port=0,
        metrics_port=None,
        # A deep queue: the waves test validation, not admission (tests/reliability/test_overload.py does that).
        batcher=BatcherConfig(max_batch_rows=4096, max_queued_rows=10_000_000),
        limits=LimitsConfig(
            max_rows_per_request=LIMITS.max_rows_per_request,
            max_rows_per_stream=LIMITS.max_rows_per_stream,
            max_message_bytes=LIMITS.max_message_bytes,
        ),
    )
    running = ServerThread(config)
    yield running
    running.stop()


def _golden(target: str) -> list[bytes]:
    """Serialized answers of valid requests on every data RPC: compared byte for byte before and after."""
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.SynthesizerStub(channel)
        sample = stub.Sample(pb.SampleRequest(model="gauss", version=1, num_rows=1000, seed=12345, label="pos"))
        stream = list(stub.SampleStream(pb.SampleStreamRequest(model="gauss", version=2, num_rows=900, seed=7)))
        rows = rows_of(sample.rows)
        table = table_of(rows, labels=np.frombuffer(sample.rows.labels, "<i4"))
        score = stub.ScoreDensity(pb.ScoreDensityRequest(model="gauss", version=1, rows=table, include_posteriors=True))
        encode = stub.Encode(pb.EncodeRequest(model="gauss", version=1, rows=table, seed=3))
        balance = list(
            stub.Balance(pb.BalanceRequest(model="gauss", class_counts={"neg": 50}, strategy=MATCH_MAJORITY, seed=9))
        )
    return [m.SerializeToString(deterministic=True) for m in (sample, *stream, score, encode, *balance)]


async def _send(stub: pb_grpc.SynthesizerStub, case: Case) -> tuple[grpc.StatusCode, str]:
    method = getattr(stub, case.method)
    try:
        if case.method in STREAMING:
            async for _ in method(case.request, timeout=60):
                pass
        else:
            await method(case.request, timeout=60)
    except grpc.aio.AioRpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


def _verdict(case: Case, code: grpc.StatusCode, details: str) -> str | None:
    """None when the outcome keeps the promise, else what broke it."""
    if code == grpc.StatusCode.OK:
        return None if case.may_succeed else "accepted a request it should refuse"
    if case.oversized:
        ok = code == grpc.StatusCode.RESOURCE_EXHAUSTED and case.field in details
        return None if ok else "oversized message not refused with RESOURCE_EXHAUSTED"
    if code not in REFUSALS:
        return f"status {code.name}"
    if not any(word in details for word in case.field.split("|")):
        return f"message does not name {case.field!r}"
    return None


def run_fuzz(fuzz_server: ServerThread, n_requests: int) -> None:
    before = _golden(fuzz_server.target)
    tally = Tally()

    async def wave(batch: list[Case]) -> None:
        async with grpc.aio.insecure_channel(fuzz_server.target) as channel:
            stub = pb_grpc.SynthesizerStub(channel)
            outcomes = await asyncio.gather(*(_send(stub, case) for case in batch))
        for case, (code, details) in zip(batch, outcomes):
            tally.sent += 1
            tally.codes[code.name] += 1
            tally.methods[case.method] += 1
            problem = _verdict(case, code, details)
            if problem is not None:
                tally.broken.append(
                    f"{problem} [{case.field}]: {case.method} {str(case.request)[:300]!r} -> {code.name}: {details}"
                )

    @settings(
        max_examples=n_requests // WAVE + 1,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(cases(), min_size=WAVE, max_size=WAVE))
    def fuzz(batch: list[Case]) -> None:
        asyncio.run(wave(batch))

    started = time.monotonic()
    fuzz()
    elapsed = time.monotonic() - started
    print(f"fuzzed {tally.sent} requests in {elapsed:.1f} s: {dict(tally.codes)} by method {dict(tally.methods)}")
    assert not tally.broken, "\n".join(tally.broken[:20])
    assert tally.sent >= n_requests
    assert len(tally.methods) == 7  # every RPC was fuzzed
    with grpc.insecure_channel(fuzz_server.target) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert _golden(fuzz_server.target) == before  # bit for bit


def test_ten_thousand_malformed_requests_leave_the_server_intact(fuzz_server: ServerThread) -> None:
    run_fuzz(fuzz_server, 10_000)


@pytest.mark.slow
def test_sixty_thousand_malformed_requests_leave_the_server_intact(fuzz_server: ServerThread) -> None:
    run_fuzz(fuzz_server, 60_000)
