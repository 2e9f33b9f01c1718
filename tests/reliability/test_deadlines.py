"""Deadlines and cancellation: work nobody waits for is never computed.

`synthserve_rows_computed_total` counts rows that went through a session run, so it proves it: requests that
expire or are cancelled while queued add nothing, and a client that walks away mid-stream stops the stream.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from serving.proto import synthesizer_pb2 as pb
from serving.proto import synthesizer_pb2_grpc as pb_grpc
from tests.serving.conftest import ServerThread, make_config
from tests.serving.helpers import metric


def computed(model: str = "gauss") -> float:
    return metric("synthserve_rows_computed_total", {"model": model, "graph": "sample"})


@pytest.fixture(scope="module")
def slow_batches(store: Path) -> Iterator[ServerThread]:
    """Every batch waits 1 s for company, so requests sit in the queue long enough to expire or be cancelled."""
    running = ServerThread(make_config(store, max_queue_delay_s=1.0, early_dispatch=False))
    yield running
    running.stop()


@pytest.mark.parametrize("how", ["deadline", "cancel"])
def test_requests_that_die_in_the_queue_are_never_computed(slow_batches: ServerThread, how: str) -> None:
    before = computed()
    with grpc.insecure_channel(slow_batches.target) as channel:
        stub = pb_grpc.SynthesizerStub(channel)
        # 20 x 3 rows: less than a run even before the batcher has timed one (PROBE_ROWS), so the batch waits.
        request = pb.SampleRequest(model="gauss", version=1, num_rows=3, seed=1)
        calls = [stub.Sample.future(request, timeout=0.3 if how == "deadline" else None) for _ in range(20)]
        if how == "cancel":
            time.sleep(0.3)
            assert all(call.cancel() for call in calls)
        else:
            for call in calls:
                call.exception(timeout=5)  # waits for the deadline
        codes = {call.code() for call in calls}
        time.sleep(1.5)  # past the batch delay: a live chunk would have run by now
        assert codes == {grpc.StatusCode.DEADLINE_EXCEEDED if how == "deadline" else grpc.StatusCode.CANCELLED}
        assert computed() == before
        # Control: the same request with time to spare is computed, and counted.
        assert stub.Sample(request, timeout=10).rows.num_rows == 3
    assert computed() == before + 3


def test_a_client_leaving_mid_stream_stops_the_streams_work(store: Path) -> None:
    running = ServerThread(make_config(store))
    chunk_rows, read = 1000, 5
    try:
        with grpc.insecure_channel(running.target) as channel:
            stub = pb_grpc.SynthesizerStub(channel)
            before = computed()
            call = stub.SampleStream(
                pb.SampleStreamRequest(model="gauss", version=1, num_rows=1_000_000, seed=4, chunk_rows=chunk_rows)
            )
            for _ in range(read):
                next(call)
            call.cancel()
            time.sleep(0.5)
            at_cancel = computed() - before
            time.sleep(1.0)
            after = computed() - before
    finally:
        running.stop()
    print(f"stream cancelled after {read} chunks read: {at_cancel:.0f} rows computed, {after:.0f} a second later")
    assert after == at_cancel  # nothing runs once the client is gone
    # Computed ahead of the reader: the engine's prefetch plus what HTTP/2 flow control lets through.
    assert at_cancel <= (read + 10) * chunk_rows
