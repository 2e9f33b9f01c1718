"""Every domain error maps to exactly one status code; bearer tokens guard the Synthesizer but not probes."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc._cython import cygrpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from serving import errors
from serving.client import SynthClient
from serving.interceptors import STATUS_BY_ERROR, _abort, status_for
from serving.proto import synthesizer_pb2 as pb
from serving.proto import synthesizer_pb2_grpc as pb_grpc
from synthserve.contract import RequestError, UnsupportedRequest
from tests.serving.conftest import ServerThread, make_config


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.ModelNotFound("x"), grpc.StatusCode.NOT_FOUND),
        (errors.InvalidArgument("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (UnsupportedRequest("x"), grpc.StatusCode.FAILED_PRECONDITION),
        (RequestError("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.QueueFull("x"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.DeadlineExceeded("x"), grpc.StatusCode.DEADLINE_EXCEEDED),
        (errors.Unavailable("x"), grpc.StatusCode.UNAVAILABLE),
        (ValueError("x"), grpc.StatusCode.INTERNAL),
    ],
)
def test_status_for(error: Exception, code: grpc.StatusCode) -> None:
    assert status_for(error) == code


def test_every_domain_error_is_mapped() -> None:
    domain = {c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.ServingError)}
    contract = {RequestError, UnsupportedRequest}  # the contract's request rules raise these
    assert domain - {errors.ServingError} | contract == {error for error, _ in STATUS_BY_ERROR}


@pytest.fixture(scope="module")
def token_server(store: Path) -> Iterator[ServerThread]:
    running = ServerThread(dataclasses.replace(make_config(store), auth_tokens=("s3cret", "other")))
    yield running
    running.stop()


@pytest.mark.parametrize("token", [None, "wrong", "s3cre", "s3cret-and-more"])
def test_synthesizer_rpcs_without_a_valid_token_are_unauthenticated(
    token_server: ServerThread, token: str | None
) -> None:
    with SynthClient(token_server.target, token=token) as client, pytest.raises(grpc.RpcError) as info:
        client.sample("gauss", 3, seed=1)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with grpc.insecure_channel(token_server.target) as channel, pytest.raises(grpc.RpcError) as stream_info:
        list(pb_grpc.SynthesizerStub(channel).SampleStream(pb.SampleStreamRequest(model="gauss", num_rows=3)))
    assert stream_info.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("token", ["s3cret", "other"])
def test_a_valid_token_is_served_and_probes_need_none(token_server: ServerThread, token: str) -> None:
    with SynthClient(token_server.target, token=token) as client:
        assert len(client.sample("gauss", 3, seed=1)) == 3
    with grpc.insecure_channel(token_server.target) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert health.status == health_pb2.HealthCheckResponse.SERVING


def test_a_status_that_cannot_be_sent_ends_the_call_as_cancelled() -> None:
    """The peer went away before the refusal: grpc cannot send the status (ExecuteBatchError), which, raised
    while another error is handled, grpc logs with a traceback; the call ends as cancelled instead."""

    class GoneContext:
        async def abort(self, code: grpc.StatusCode, details: str) -> None:
            raise cygrpc.ExecuteBatchError("Failed execute_batch")

    class LiveContext:
        async def abort(self, code: grpc.StatusCode, details: str) -> None:
            raise grpc.aio.AbortError(details)

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(_abort(GoneContext(), grpc.StatusCode.INVALID_ARGUMENT, "x"))  # type: ignore[arg-type]
    with pytest.raises(grpc.aio.AbortError):
        asyncio.run(_abort(LiveContext(), grpc.StatusCode.INVALID_ARGUMENT, "x"))  # type: ignore[arg-type]
