"""Determinism: same model version, seed, label and row count -> the same rows across restarts, batch sizes,
concurrency levels and streaming vs unary. Compared as bytes (bit-identical) on the closed-form fixture and on
a shipped model (a real exported flow network), where float32 rounding could differ across batch sizes.
"""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from serving.proto import synthesizer_pb2 as pb
from serving.proto import synthesizer_pb2_grpc as pb_grpc
from tests.serving.conftest import ServerThread, make_config

SHIPPED = Path(__file__).resolve().parents[2] / "model_store" / "breast-cancer-flow"
N_ROWS = 1800  # within the tests' 512 KiB messages at 30 float64 columns


def _rows(table: pb.Table) -> tuple[bytes, ...]:
    """Each column's values, then the labels, as bytes (columns may be 4 or 8 bytes a value)."""
    return (*(c.values for c in table.columns), table.labels)


def _answers(target: str, model: str, label: str) -> dict[str, tuple[bytes, ...]]:
    request = pb.SampleRequest(model=model, version=1, num_rows=N_ROWS, seed=2**63 + 5, label=label)
    stream_request = pb.SampleStreamRequest(model=model, version=1, num_rows=N_ROWS, seed=2**63 + 5, label=label)
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.SynthesizerStub(channel)
        answers = {"unary": _rows(stub.Sample(request, timeout=60).rows)}
        for chunk_rows in (1, 7, 1000):
            if chunk_rows == 1:
                stream_request.num_rows = 50  # one row per message: a short prefix is enough
            else:
                stream_request.num_rows = N_ROWS
            stream_request.chunk_rows = chunk_rows
            parts = [m.rows for m in stub.SampleStream(stream_request, timeout=60)]
            answers[f"stream/{chunk_rows}"] = (
                *(b"".join(p.columns[i].values for p in parts) for i in range(len(parts[0].columns))),
                b"".join(p.labels for p in parts),
            )
        with ThreadPoolExecutor(16) as pool:  # 16 concurrent copies batched together with each other
            concurrent = set(pool.map(lambda _: _rows(stub.Sample(request, timeout=60).rows), range(16)))
        answers["concurrent"] = concurrent.pop() if len(concurrent) == 1 else (b"differs",)
    return answers


@pytest.mark.parametrize("model", ["gauss", "breast-cancer-flow"])
def test_rows_do_not_depend_on_batching_streaming_concurrency_or_restarts(
    store: Path, tmp_path: Path, model: str
) -> None:
    if model == "gauss":
        model_store, label = store, "pos"
    else:
        if not (SHIPPED / "1" / "manifest.json").is_file():
            pytest.skip("shipped model not exported yet")
        model_store, label = tmp_path / "store", "1"
        shutil.copytree(SHIPPED, model_store / model)
    results = {}
    # Three server lives (restarts) with different batching: tiny batches, large batches, no batching.
    lives: dict[str, dict[str, object]] = {
        "batch64": {"max_batch_rows": 64},
        "batch4096": {},
        "unbatched": {"enabled": False},
    }
    for name, batcher in lives.items():
        running = ServerThread(make_config(model_store, **batcher))
        try:
            results[name] = _answers(running.target, model, label)
        finally:
            running.stop()
    reference = results["batch4096"]["unary"]
    for life, answers in results.items():
        for how, data in answers.items():
            if how == "stream/1":  # a 50-row prefix: compare against the reference's first 50 rows per column
                prefix = tuple(column[: len(column) // N_ROWS * 50] for column in reference)
                assert data == prefix, f"{life} {how}"
            else:
                assert data == reference, f"{life} {how}"
