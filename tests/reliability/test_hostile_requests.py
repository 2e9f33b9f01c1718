"""Legal-looking requests built to break arithmetic, echo, parsing and the token check.

Each test names the issue's failure it guards: class counts near 2^63 that wrapped, a float64 value beyond
float32 that became inf inside the graph, a huge name echoed into a status trailer, unparsable bytes that became
UNKNOWN with a traceback per request, and a body parsed before the token was checked.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from serving.proto import synthesizer_pb2 as pb
from serving.proto import synthesizer_pb2_grpc as pb_grpc
from tests.serving.conftest import ServerThread, make_config
from tests.serving.helpers import table_of

INT64_MAX = 2**63 - 1
TOKEN = "tok-0123456789abcdef"


@pytest.fixture(scope="module")
def guarded(store) -> Iterator[ServerThread]:  # type: ignore[no-untyped-def]
    running = ServerThread(dataclasses.replace(make_config(store), auth_tokens=(TOKEN,)))
    yield running
    running.stop()


def _code_and_message(call) -> tuple[grpc.StatusCode, str]:  # type: ignore[no-untyped-def]
    try:
        result = call()
        if not isinstance(result, pb.SampleResponse | pb.ScoreDensityResponse | bytes):
            list(result)
    except grpc.RpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


BALANCE_CASES = [
    ("explicit max", pb.BALANCE_STRATEGY_EXPLICIT_COUNTS, {}, {"neg": INT64_MAX}),
    ("explicit wrap", pb.BALANCE_STRATEGY_EXPLICIT_COUNTS, {}, {"neg": 2**62, "pos": 2**62}),
    ("explicit sum wraps to small", pb.BALANCE_STRATEGY_EXPLICIT_COUNTS, {}, {"neg": INT64_MAX, "pos": 2}),
    ("ratio near max", pb.BALANCE_STRATEGY_TARGET_RATIO, {"neg": INT64_MAX, "pos": 0}, {}),
    ("majority near max", pb.BALANCE_STRATEGY_MATCH_MAJORITY, {"neg": INT64_MAX, "pos": 1}, {}),
]


@pytest.mark.parametrize(("case", "strategy", "have", "explicit"), BALANCE_CASES, ids=[c[0] for c in BALANCE_CASES])
def test_balance_counts_near_int64_max_are_refused_naming_the_limit(
    stub: pb_grpc.SynthesizerStub, case: str, strategy: int, have: dict[str, int], explicit: dict[str, int]
) -> None:
    request = pb.BalanceRequest(
        model="gauss", strategy=strategy, class_counts=have, explicit_counts=explicit, target_ratio=0.5, seed=1
    )
    code, message = _code_and_message(lambda: stub.Balance(request, timeout=30))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (case, code, message)
    assert "max_rows_per_stream" in message


def test_balance_counts_just_inside_the_limit_are_exact(stub: pb_grpc.SynthesizerStub) -> None:
    request = pb.BalanceRequest(
        model="gauss",
        strategy=pb.BALANCE_STRATEGY_TARGET_RATIO,
        class_counts={"neg": 2**62 + 1000, "pos": 2**62},
        target_ratio=1.0,
        seed=1,
    )
    labels = np.concatenate([np.frombuffer(m.rows.labels, "<i4") for m in stub.Balance(request, timeout=30)])
    assert labels.tolist() == [1] * 1000  # 1,000 rows of class pos, computed in exact integers


@pytest.mark.parametrize("value", [1e300, -1e300, 3.41e38, np.inf])
def test_float64_values_beyond_float32_are_refused_after_the_cast(stub: pb_grpc.SynthesizerStub, value: float) -> None:
    rows = np.array([[0.5, value, 1.0]])
    code, message = _code_and_message(
        lambda: stub.ScoreDensity(pb.ScoreDensityRequest(model="gauss", rows=table_of(rows)), timeout=10)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "rows.columns['x1']" in message and "float32" in message


def test_a_row_far_outside_training_is_flagged_not_passed(stub: pb_grpc.SynthesizerStub) -> None:
    rows = np.array([[3e38, -3e38, 1.0], [0.0, 0.0, 0.0]])  # finite in float32; its density underflows
    request = pb.ScoreDensityRequest(model="gauss", version=1, rows=table_of(rows), fpr=0.01)
    response = stub.ScoreDensity(request, timeout=10)
    log_density = np.frombuffer(response.log_density, "<f4")
    flags = np.frombuffer(response.is_anomaly, "u1")
    assert not np.isfinite(log_density[0]) and flags.tolist() == [1, 0]


def _with_column(name: str) -> pb.Table:
    table = table_of(np.zeros((1, 3)))
    table.columns.add(name=name, value_type=pb.VALUE_TYPE_FLOAT64, values=np.zeros(1).tobytes())
    return table


@pytest.mark.parametrize(
    ("what", "request_of"),
    [
        ("model name", lambda big: ("GetModel", pb.GetModelRequest(model=big))),
        ("model name in Sample", lambda big: ("Sample", pb.SampleRequest(model=big, num_rows=1))),
        ("label", lambda big: ("Sample", pb.SampleRequest(model="gauss", num_rows=1, label=big))),
        (
            "proportions key",
            lambda big: ("Sample", pb.SampleRequest(model="gauss", num_rows=1, proportions={"weights": {big: 1.0}})),
        ),
        ("column name", lambda big: ("ScoreDensity", pb.ScoreDensityRequest(model="gauss", rows=_with_column(big)))),
    ],
)
def test_errors_quote_at_most_a_short_piece_of_the_callers_text(server: ServerThread, what: str, request_of) -> None:  # type: ignore[no-untyped-def]
    big = "é" * 20_000  # 40 KB of UTF-8, 120 KB percent-encoded: far beyond the 8 KiB metadata limit
    method, request = request_of(big)
    with grpc.insecure_channel(server.target) as channel:
        stub = pb_grpc.SynthesizerStub(channel)
        code, message = _code_and_message(lambda: getattr(stub, method)(request, timeout=10))
    assert code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT), (what, code, message[:200])
    assert "20000 characters" in message or "20002 characters" in message  # says how long the text was
    assert len(message.encode()) < 2000


def _raw(channel: grpc.Channel, method: str, stream: bool = False):  # type: ignore[no-untyped-def]
    make = channel.unary_stream if stream else channel.unary_unary
    return make(method, request_serializer=None, response_deserializer=None)


GARBAGE = b"\xff\xff\xff\xff\x0f"  # a varint that never ends: no message type parses it


@pytest.mark.parametrize(
    ("method", "stream"),
    [
        ("/synthserve.v1.Synthesizer/Sample", False),
        ("/synthserve.v1.Synthesizer/SampleStream", True),
        ("/synthserve.v1.Synthesizer/Balance", True),
        ("/synthserve.v1.Synthesizer/ScoreDensity", False),
        ("/grpc.health.v1.Health/Check", False),
        ("/grpc.health.v1.Health/Watch", True),
    ],
)
def test_unparsable_requests_are_invalid_argument(server: ServerThread, method: str, stream: bool) -> None:
    with grpc.insecure_channel(server.target) as channel:
        code, message = _code_and_message(lambda: _raw(channel, method, stream)(GARBAGE, timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, message)
    assert "do not parse" in message


def test_a_flood_of_unparsable_requests_logs_one_line(server: ServerThread, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO), grpc.insecure_channel(server.target) as channel:
        sample = _raw(channel, "/synthserve.v1.Synthesizer/Sample")
        codes = [_code_and_message(lambda: sample(GARBAGE, timeout=10))[0] for _ in range(300)]
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert set(codes) == {grpc.StatusCode.INVALID_ARGUMENT}
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    refusals = [r for r in caplog.records if "unparsable" in r.getMessage()]
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(refusals) <= 1 and not tracebacks


def test_without_a_token_the_body_is_not_parsed(guarded: ServerThread) -> None:
    with grpc.insecure_channel(guarded.target) as channel:
        code, _ = _code_and_message(lambda: _raw(channel, "/synthserve.v1.Synthesizer/Sample")(GARBAGE, timeout=10))
        assert code == grpc.StatusCode.UNAUTHENTICATED  # not INVALID_ARGUMENT: refused before parsing
        with_token = _raw(channel, "/synthserve.v1.Synthesizer/Sample")
        code, _ = _code_and_message(
            lambda: with_token(GARBAGE, timeout=10, metadata=(("authorization", f"Bearer {TOKEN}"),))
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT
