"""`--runtime torchscript` serves the same rows as ONNX Runtime (the only serving path that imports torch)."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest

from serving.config import RuntimeConfig, ServerConfig
from serving.proto import synthesizer_pb2 as pb
from serving.proto import synthesizer_pb2_grpc as pb_grpc
from synthserve.contract import load_manifest
from tests.serving.conftest import ServerThread
from tests.serving.helpers import columns_of

STORE = Path(__file__).resolve().parents[2] / "model_store"
WITH_TORCHSCRIPT = sorted(
    p.parent.parent.name for p in STORE.glob("*/*/manifest.json") if load_manifest(p).torchscript is not None
)


def _rows(target: str, model: str) -> np.ndarray:
    with grpc.insecure_channel(target) as channel:
        response = pb_grpc.SynthesizerStub(channel).Sample(pb.SampleRequest(model=model, num_rows=64, seed=3))
    return np.stack(list(columns_of(response.rows).values()), axis=1).astype(np.float64)


@pytest.mark.skipif(not WITH_TORCHSCRIPT, reason="no shipped model with a TorchScript module yet")
def test_torchscript_runtime_serves_the_same_rows_as_onnx() -> None:
    pytest.importorskip("torch")
    servers = {
        runtime: ServerThread(
            ServerConfig(model_store=STORE, port=0, metrics_port=None, runtime=RuntimeConfig(runtime=runtime))
        )
        for runtime in ("onnx", "torchscript")
    }
    try:
        # Only models both servers loaded: a training session may republish one meanwhile.
        both = set(servers["onnx"].server.engine.registry.names()) & set(
            servers["torchscript"].server.engine.registry.names()
        )
        assert both, "no model loaded by both runtimes"
        for model in sorted(both & set(WITH_TORCHSCRIPT)):
            onnx_rows = _rows(servers["onnx"].target, model)
            torch_rows = _rows(servers["torchscript"].target, model)
            # Integer columns are rounded after the graph, so a last-bit difference may move one by 1.
            assert np.mean(np.isclose(onnx_rows, torch_rows, rtol=1e-3, atol=1e-3)) > 0.99, model
    finally:
        for running in servers.values():
            running.stop()
