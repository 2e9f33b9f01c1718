"""Bounded memory for huge streams with a slow reader: the server runs at most a few chunks ahead of the client.

The scaled test counts rows computed (`synthserve_rows_computed_total`) against rows the client has read; the
slow variant streams 10M rows from a real `synthserve serve` and samples its RSS.
"""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest

from serving.proto import synthesizer_pb2 as pb
from serving.proto import synthesizer_pb2_grpc as pb_grpc
from tests.reliability.served import ServeProcess
from tests.reliability.test_deadlines import computed
from tests.serving.conftest import ServerThread, make_config

CHUNK_ROWS = 2048
PREFETCH = 2  # LimitsConfig.stream_prefetch_chunks
# HTTP/2 flow control is the receiver's: by default gRPC grows the window by BDP probing (to megabytes on
# loopback), so the *client* buffers what it has not read. With the window fixed, the server is held back.
FIXED_WINDOW = [("grpc.http2.bdp_probe", 0)]


def test_a_slow_reader_holds_the_stream_back(store: Path) -> None:
    running = ServerThread(make_config(store))
    n_rows = 150 * CHUNK_ROWS
    ahead = []
    try:
        with grpc.insecure_channel(running.target, options=FIXED_WINDOW) as channel:
            before = computed()
            request = pb.SampleStreamRequest(model="gauss", version=1, num_rows=n_rows, seed=8, chunk_rows=CHUNK_ROWS)
            received = 0
            for message in pb_grpc.SynthesizerStub(channel).SampleStream(request):
                received += message.rows.num_rows
                time.sleep(0.005)  # the slow reader
                ahead.append(computed() - before - received)
    finally:
        running.stop()
    chunks_ahead = max(ahead) / CHUNK_ROWS
    print(
        f"slow reader: server at most {chunks_ahead:.0f} chunks ({max(ahead):.0f} rows) ahead over {len(ahead)} chunks"
    )
    assert received == n_rows
    # Prefetch plus what the HTTP/2 windows hold (64 KiB by default, each chunk 32 KiB): a few chunks, not the stream.
    assert chunks_ahead <= PREFETCH + 8


@pytest.mark.slow
def test_ten_million_row_stream_keeps_server_rss_bounded(store: Path) -> None:
    n_rows = 10_000_000
    with ServeProcess(store, "--reload-interval-s", "0") as server, grpc.insecure_channel(server.target) as channel:
        request = pb.SampleStreamRequest(model="gauss", version=1, num_rows=n_rows, seed=9, chunk_rows=CHUNK_ROWS)
        received, baseline, peak = 0, 0, 0
        started = time.monotonic()
        for index, message in enumerate(pb_grpc.SynthesizerStub(channel).SampleStream(request)):
            received += message.rows.num_rows
            time.sleep(0.001)
            if index == 50:
                baseline = server.rss_bytes()
            if index % 100 == 0:
                peak = max(peak, server.rss_bytes())
        elapsed = time.monotonic() - started
    growth_mb = (peak - baseline) / 2**20
    print(
        f"10M-row stream in {elapsed:.1f} s: RSS {baseline / 2**20:.0f} MB after 50 chunks, peak {peak / 2**20:.0f} MB"
    )
    assert received == n_rows
    assert growth_mb < 64
