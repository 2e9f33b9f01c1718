"""Every RPC of every shipped model in model_store/ through a real server (skipped when none is published)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_digits
from sklearn.svm import SVC

from serving.bulk import BulkRequest, write_partition
from serving.client import SynthClient
from serving.config import BatcherConfig, ServerConfig
from serving.proto import synthesizer_pb2 as pb
from serving.proto import synthesizer_pb2_grpc as pb_grpc
from synthserve.contract import (
    LabelRuns,
    Manifest,
    SamplingOptions,
    finish_rows,
    load_manifest,
    resolve_conditions,
    sample_conditioned_rows,
    sample_rows,
)
from synthserve.contract.sessions import open_session
from tests.serving.conftest import ServerThread
from tests.serving.helpers import columns_of

STORE = Path(__file__).resolve().parents[2] / "model_store"
SHIPPED = sorted(p.parent.parent.name for p in STORE.glob("*/*/manifest.json"))
pytestmark = pytest.mark.skipif(not SHIPPED, reason="no shipped models in model_store/ yet")

Stub = pb_grpc.SynthesizerStub


@pytest.fixture(scope="module")
def shipped_server() -> Iterator[ServerThread]:
    running = ServerThread(
        ServerConfig(model_store=STORE, port=0, metrics_port=None, batcher=BatcherConfig(max_batch_rows=2048))
    )
    yield running
    running.stop()


@pytest.fixture()
def stub(shipped_server: ServerThread) -> Iterator[Stub]:
    with grpc.insecure_channel(
        shipped_server.target, options=[("grpc.max_receive_message_length", 1 << 28)]
    ) as channel:
        yield pb_grpc.SynthesizerStub(channel)


def _manifest(name: str) -> Manifest:
    """The model's latest manifest; skips while a training session republishes it (its directory is gone)."""
    published = sorted((STORE / name).glob("*/manifest.json"), key=lambda p: int(p.parent.name))
    if not published:
        pytest.skip(f"{name} is being republished")
    return load_manifest(published[-1])


def _matrix(table: pb.Table) -> np.ndarray:
    return np.stack(list(columns_of(table).values()), axis=1).astype(np.float32)


def _as_table(rows: np.ndarray, labels: np.ndarray | None, names: list[str]) -> pb.Table:
    table = pb.Table(num_rows=len(rows))
    for index, name in enumerate(names):
        table.columns.add(name=name, value_type=pb.VALUE_TYPE_FLOAT32, values=rows[:, index].astype("<f4").tobytes())
    if labels is not None:
        table.labels = labels.astype("<i4").tobytes()
    return table


def test_every_published_model_is_served(shipped_server: ServerThread, stub: Stub) -> None:
    shipped_server.call(shipped_server.server.reload())  # the store may have changed since the server started
    published = {p.parent.parent.name for p in STORE.glob("*/*/manifest.json")}
    served = {m.name for m in stub.ListModels(pb.ListModelsRequest()).models}
    assert served == published, shipped_server.server.engine.registry.failures


@pytest.mark.parametrize("name", SHIPPED)
def test_sample_is_valid_reproducible_and_stream_equals_unary(stub: Stub, name: str) -> None:
    manifest = _manifest(name)
    info = stub.GetModel(pb.GetModelRequest(model=name)).model
    assert [c.name for c in info.schema.columns] == [c.name for c in manifest.schema.columns]
    first = stub.Sample(pb.SampleRequest(model=name, num_rows=3000, seed=21))
    rows = _matrix(first.rows)
    assert rows.shape == (3000, manifest.schema.width) and np.isfinite(rows).all()
    for index, column in enumerate(manifest.schema.columns):
        if column.kind == "categorical":
            assert rows[:, index].min() >= 0 and rows[:, index].max() < len(column.categories or ())
    if manifest.schema.label is not None:
        labels = np.frombuffer(first.rows.labels, "<i4")
        expected = np.round(3000 * np.asarray(manifest.schema.label.priors))
        assert np.abs(np.bincount(labels, minlength=len(expected)) - expected).max() <= 1
    assert stub.Sample(pb.SampleRequest(model=name, num_rows=3000, seed=21)).rows == first.rows
    chunks = list(stub.SampleStream(pb.SampleStreamRequest(model=name, num_rows=3000, seed=21, chunk_rows=700)))
    np.testing.assert_allclose(np.concatenate([_matrix(c.rows) for c in chunks]), rows, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("name", SHIPPED)
def test_rows_alone_equal_rows_among_50_concurrent_requests(stub: Stub, name: str) -> None:
    _manifest(name)
    requests = [pb.SampleRequest(model=name, num_rows=16, seed=1000 + i) for i in range(50)]
    alone = [stub.Sample(r) for r in requests]
    futures = [stub.Sample.future(r) for r in requests]
    together = [f.result() for f in futures]
    for a, b in zip(alone, together):
        np.testing.assert_allclose(_matrix(b.rows), _matrix(a.rows), rtol=1e-5, atol=1e-5)
        assert a.rows.labels == b.rows.labels


@pytest.mark.parametrize("name", SHIPPED)
def test_balance_score_and_encode_follow_the_capabilities(stub: Stub, name: str) -> None:
    manifest = _manifest(name)
    names = [c.name for c in manifest.schema.columns]
    label = manifest.schema.label
    sample = stub.Sample(pb.SampleRequest(model=name, num_rows=64, seed=5))
    rows = _matrix(sample.rows)
    labels = np.frombuffer(sample.rows.labels, "<i4") if label is not None else None
    if label is not None:
        counts = {str(c): 10 * (i + 1) for i, c in enumerate(label.classes)}
        request = pb.BalanceRequest(
            model=name, class_counts=counts, strategy=pb.BALANCE_STRATEGY_MATCH_MAJORITY, seed=2
        )
        got = np.concatenate([np.frombuffer(c.rows.labels, "<i4") for c in stub.Balance(request)])
        majority = max(counts.values())
        assert np.bincount(got, minlength=len(label.classes)).tolist() == [majority - v for v in counts.values()]
    score = pb.ScoreDensityRequest(
        model=name, rows=_as_table(rows, None, names), include_class_log_density=True, include_posteriors=True
    )
    if "log_prob" in manifest.capabilities:
        assert manifest.calibration is not None
        score.fpr = manifest.calibration.fpr[0]
        response = stub.ScoreDensity(score)
        log_p = np.frombuffer(response.log_density, "<f4")
        cond = np.frombuffer(response.class_log_density, "<f4").reshape(64, -1)
        posterior = np.frombuffer(response.posteriors, "<f4").reshape(64, -1)
        priors = np.asarray(label.priors if label is not None else [1.0])
        assert np.isfinite(log_p).all()
        np.testing.assert_allclose(log_p, np.logaddexp.reduce(cond + np.log(priors), axis=1), rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(posterior.sum(axis=1), 1.0, atol=1e-4)
        # Shipped density models serve the anomaly score and flag by it, at its calibrated threshold.
        served = np.frombuffer(response.anomaly_score, "<f4")
        assert response.threshold_score == pb.ANOMALY_SCORE_KIND_ANOMALY_SCORE and len(served) == 64
        assert response.threshold == pytest.approx(manifest.calibration.anomaly_score_threshold(score.fpr))
        flags = np.frombuffer(response.is_anomaly, np.uint8).astype(bool)
        np.testing.assert_array_equal(flags, ~(served <= response.threshold))
        assert flags.mean() < 0.5  # the model's own rows are mostly normal
        numeric = [i for i, c in enumerate(manifest.schema.columns) if c.kind != "categorical"]
        far = rows.copy()
        far[:, numeric] = far[:, numeric] + 1000.0 * (1.0 + np.abs(far[:, numeric]))  # far outside every column
        score.rows.CopyFrom(_as_table(far, None, names))
        assert np.frombuffer(stub.ScoreDensity(score).is_anomaly, np.uint8).all()
        score.rows.CopyFrom(_as_table(rows, None, names))
        assert stub.ScoreDensity(score).log_density == response.log_density  # the scoring seed defaults to 0
    else:
        with pytest.raises(grpc.RpcError) as info:
            stub.ScoreDensity(score)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    encode = pb.EncodeRequest(model=name, rows=_as_table(rows, labels, names))
    if "encode" in manifest.capabilities:
        response = stub.Encode(encode)
        latent = np.frombuffer(response.latent, "<f4").reshape(64, response.latent_dim)
        assert response.latent_dim == manifest.graphs["encode"].outputs[0].shape[1] and np.isfinite(latent).all()
    else:
        with pytest.raises(grpc.RpcError) as info:
            stub.Encode(encode)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION


@pytest.mark.skipif("digits-diffusion" not in SHIPPED, reason="digits-diffusion is not shipped")
def test_guidance_follows_the_contract_and_sharpens_the_class(stub: Stub) -> None:
    """Served `sampling.guidance` on digits-diffusion: rows are the contract's (sample_rows over the version's
    own graphs, finished), streams equal unary calls, and an SVM trained on real digits finds the requested
    digit more often as w grows (w = 0 is the unconditional model); other families refuse the option."""
    manifest = _manifest("digits-diffusion")
    directory = STORE / "digits-diffusion" / str(manifest.version)
    sessions = {g: open_session(directory / manifest.graphs[g].file) for g in ("sample", "sample_guided")}

    def run(graph: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return list(sessions[graph].run(None, feeds))

    digits = load_digits()
    classifier = SVC(gamma=0.001).fit(digits.data, digits.target)
    accuracy = {}
    for guidance in (0.0, 1.0, 3.0):
        correct = 0
        for digit in range(10):
            options = pb.SamplingOptions(guidance=guidance)
            request = pb.SampleRequest(
                model="digits-diffusion", num_rows=40, seed=7, label=str(digit), sampling=options
            )
            response = stub.Sample(request)
            assert response.sampling.guidance == guidance
            rows = _matrix(response.rows)
            labels = np.full(40, digit, dtype=np.int64)
            graph_rows = sample_rows(manifest.graphs, run, 7, labels, 40, SamplingOptions(guidance=guidance))
            expected = np.stack(finish_rows(manifest.schema, graph_rows), axis=1).astype(np.float32)
            np.testing.assert_allclose(rows, expected, atol=1e-5)
            correct += int((classifier.predict(rows) == digit).sum())
        accuracy[guidance] = correct / 400
    assert accuracy[0.0] < 0.5 < accuracy[1.0] <= accuracy[3.0], accuracy
    stream = pb.SampleStreamRequest(
        model="digits-diffusion", num_rows=90, seed=3, chunk_rows=16, sampling=pb.SamplingOptions(guidance=2.5)
    )
    unary = pb.SampleRequest(model="digits-diffusion", num_rows=90, seed=3, sampling=pb.SamplingOptions(guidance=2.5))
    chunks = [_matrix(c.rows) for c in stub.SampleStream(stream)]
    np.testing.assert_array_equal(np.concatenate(chunks), _matrix(stub.Sample(unary).rows))
    plain = pb.SampleRequest(model="digits-diffusion", num_rows=20, seed=3)
    explicit = pb.SampleRequest(
        model="digits-diffusion", num_rows=20, seed=3, sampling=pb.SamplingOptions(guidance=1.0)
    )
    assert stub.Sample(plain).rows == stub.Sample(explicit).rows  # w = 1 is the plain sample graph
    with pytest.raises(grpc.RpcError) as info:
        stub.Sample(pb.SampleRequest(model="digits-flow", num_rows=5, sampling=pb.SamplingOptions(guidance=2.0)))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "sampling.guidance 2: model 'digits-flow' (flow)" in (info.value.details() or "")


@pytest.mark.parametrize("name", ["abalone19-flow", "breast-cancer-diffusion"])
def test_bulk_partitions_of_a_trained_model_are_its_stream(
    shipped_server: ServerThread, tmp_path: Path, name: str
) -> None:
    """Three Indexed-Job partitions (best-of-3 candidates on the flow, one class on diffusion) read back from
    Parquet equal one SampleStream of the whole request, bit for bit."""
    manifest = _manifest(name)
    version = int(sorted((STORE / name).glob("*/manifest.json"), key=lambda p: int(p.parent.name))[-1].parent.name)
    label = str(manifest.schema.label.classes[-1]) if manifest.schema.label is not None else None
    best_of = 3 if name.endswith("flow") else None
    request = BulkRequest(name, version, 2_500, 99, partition_rows=1_024, chunk_rows=256, label=label, best_of=best_of)
    with SynthClient(shipped_server.target, timeout_s=60) as client:
        paths = [write_partition(client, request, index, tmp_path) for index in (1, 2, 0)]
        stream = client.sample_stream(
            name, 2_500, label=label, seed=99, version=version, chunk_rows=256, best_of=best_of
        )
        whole = pd.concat(list(stream), ignore_index=True)
    parts = pd.concat([pd.read_parquet(p) for p in sorted(paths)], ignore_index=True)
    assert len(parts) == 2_500 and list(parts.columns) == list(whole.columns)
    pd.testing.assert_frame_equal(parts, whole, check_exact=True)


def test_conditions_on_a_trained_model_follow_the_contracts_search(stub: Stub) -> None:
    """abalone19-flow, best-of-3 rows of both classes with a category and a range: every row meets them, the rows
    are the contract's reference search (sample_conditioned_rows over the version's own graphs), and the stream
    equals the unary call."""
    name = "abalone19-flow"
    manifest = _manifest(name)
    directory = STORE / name / str(manifest.version)
    sessions = {g: open_session(directory / manifest.graphs[g].file) for g in ("sample", "log_prob")}

    def run(graph: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return list(sessions[graph].run(None, feeds))

    conditions = [pb.FeatureCondition(column="A1"), pb.FeatureCondition(column="A2")]
    conditions[0].equals.string_value = "M"
    conditions[1].range.low, conditions[1].range.high = 0.5, 0.6
    proportions = pb.ClassProportions(weights={"negative": 1, "positive": 1})
    options = pb.SamplingOptions(best_of=3)
    unary = stub.Sample(
        pb.SampleRequest(
            model=name, num_rows=300, seed=11, proportions=proportions, sampling=options, conditions=conditions
        )
    )
    rows = _matrix(unary.rows)
    assert rows.shape == (300, manifest.schema.width)
    assert (rows[:, 0] == 2).all() and ((rows[:, 1] >= 0.5) & (rows[:, 1] <= 0.6)).all()  # M is code 2
    assert np.bincount(np.frombuffer(unary.rows.labels, "<i4")).tolist() == [150, 150]
    resolved = resolve_conditions(
        manifest, [{"column": "A1", "equals": "M"}, {"column": "A2", "low": 0.5, "high": 0.6}]
    )
    runs = LabelRuns((0, 1), (150, 150))
    graph_rows, labels = sample_conditioned_rows(
        manifest.graphs, run, manifest.schema, 11, runs, 300, resolved, SamplingOptions(best_of=3), 10**6, 2048
    )
    expected = np.stack(finish_rows(manifest.schema, graph_rows), axis=1).astype(np.float32)
    np.testing.assert_allclose(rows, expected, atol=1e-5)
    assert labels is not None and (np.frombuffer(unary.rows.labels, "<i4") == labels).all()
    stream = pb.SampleStreamRequest(
        model=name,
        num_rows=300,
        seed=11,
        proportions=proportions,
        sampling=options,
        conditions=conditions,
        chunk_rows=100,
    )
    np.testing.assert_array_equal(np.concatenate([_matrix(c.rows) for c in stub.SampleStream(stream)]), rows)
