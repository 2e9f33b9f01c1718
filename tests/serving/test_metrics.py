"""The metrics endpoint serves every documented series once traffic has flowed."""

from __future__ import annotations

import contextlib
import importlib.util
import re
import urllib.request
from pathlib import Path

import grpc
import numpy as np

from serving.metrics import MetricsServer
from serving.proto import synthesizer_pb2 as pb
from serving.proto import synthesizer_pb2_grpc as pb_grpc
from tests.serving.conftest import ServerThread
from tests.serving.helpers import table_of

DOCUMENTED = re.findall(
    r"^\| `(synthserve_[a-z_]+)`", (Path(__file__).parents[2] / "docs" / "metrics.md").read_text(), re.M
)
GPU_ONLY = {name for name in DOCUMENTED if "_gpu_" in name}


def test_the_endpoint_shows_every_documented_series(server: ServerThread) -> None:
    with grpc.insecure_channel(server.target) as channel:
        stub = pb_grpc.SynthesizerStub(channel)
        stub.Sample(pb.SampleRequest(model="gauss", num_rows=5, seed=1))
        list(stub.SampleStream(pb.SampleStreamRequest(model="gauss", num_rows=5, seed=1)))
        stub.ScoreDensity(pb.ScoreDensityRequest(model="gauss", rows=table_of(np.zeros((4, 3)))))
        stub.Encode(pb.EncodeRequest(model="gauss", rows=table_of(np.zeros((4, 3)), np.zeros(4))))
        with contextlib.suppress(grpc.RpcError):
            stub.Sample(pb.SampleRequest(model="gauss", num_rows=0))
        with contextlib.suppress(grpc.RpcError):
            stub.Sample(pb.SampleRequest(model="model-that-does-not-exist", num_rows=1))
    endpoint = MetricsServer(0)
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{endpoint.port}/metrics", timeout=5).read().decode()
    finally:
        endpoint.close()
    assert len(DOCUMENTED) >= 14
    for name in set(DOCUMENTED) - GPU_ONLY:
        assert re.search(rf"^{name}(_bucket|_count|_sum)?[{{ ]", text, re.M), f"{name} missing"
    if importlib.util.find_spec("pynvml") is None:  # no NVML, so no GPU series at all (absent, not zero)
        assert not any(name in text for name in GPU_ONLY)
    assert 'synthserve_requests_total{code="INVALID_ARGUMENT",method="Sample",model="gauss"}' in text
    assert 'synthserve_requests_total{code="NOT_FOUND",method="Sample",model="unknown"}' in text
    assert "model-that-does-not-exist" not in text  # unknown names cannot create series
    assert re.search(r'synthserve_requests_total\{code="OK",method="ScoreDensity",model="gauss"\} [1-9]', text)
    assert re.search(r'synthserve_rows_scored_total\{model="gauss"\} [1-9]', text)
