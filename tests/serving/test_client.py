"""SynthClient speaks DataFrames with the training data's names, dtypes and labels, through a real server."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pandas as pd
import pytest

from serving.client import SynthClient
from tests.serving.conftest import ServerThread, make_config
from tests.serving.fixture_store import CATEGORIES, CLASSES, expected_log_prob
from tests.serving.helpers import expected_rows, metric


@pytest.fixture()
def client(server: ServerThread) -> Iterator[SynthClient]:
    with SynthClient(server.target, timeout_s=30) as client:
        yield client


def test_models_describe_every_loaded_model(client: SynthClient) -> None:
    models = {m.name: m for m in client.models()}
    assert sorted(models) == ["gauss", "gauss-gan"]
    gauss = models["gauss"]
    assert gauss.classes == CLASSES and gauss.label == "y" and gauss.versions == (1, 2)
    assert [c.name for c in gauss.columns] == ["x0", "x1", "cat"] and gauss.columns[2].categories == CATEGORIES


def test_sample_returns_labelled_frames_with_training_names_and_labels(client: SynthClient) -> None:
    frame = client.sample("gauss", 100, label="pos", seed=3, version=1)
    assert list(frame.columns) == ["x0", "x1", "cat", "y"]
    assert frame["x0"].dtype == np.float64 and set(frame["cat"]) <= set(CATEGORIES) and set(frame["y"]) == {"pos"}
    assert frame.attrs == {"seed": 3, "version": 1, "temperature": 1.0, "best_of": 1, "guidance": 1.0}
    expected = expected_rows(3, np.ones(100, dtype=np.int64), 1)
    np.testing.assert_allclose(frame[["x0", "x1"]].to_numpy(), expected[:, :2], rtol=2e-6, atol=2e-6)
    assert [CATEGORIES.index(c) for c in frame["cat"]] == expected[:, 2].astype(int).tolist()


def test_sampling_options_reach_the_server_and_come_back_in_attrs(client: SynthClient) -> None:
    options = {"label": "pos", "seed": 31, "version": 1, "temperature": 0.5, "best_of": 3}
    frame = client.sample("gauss", 50, **options)  # type: ignore[arg-type]
    assert frame.attrs == {"seed": 31, "version": 1, "temperature": 0.5, "best_of": 3, "guidance": 1.0}
    streamed = pd.concat(list(client.sample_stream("gauss", 50, chunk_rows=7, **options)), ignore_index=True)  # type: ignore[arg-type]
    pd.testing.assert_frame_equal(streamed, frame)
    assert not frame.equals(client.sample("gauss", 50, label="pos", seed=31, version=1))
    table = pd.DataFrame({"x0": [0.0] * 5, "x1": [0.0] * 5, "cat": ["a"] * 5, "y": ["neg"] * 4 + ["pos"]})
    balanced = client.balance(table, "y", "gauss", seed=1, version=1, best_of=2)
    assert balanced.attrs["best_of"] == 2 and balanced["y"].tolist() == ["pos"] * 3
    with pytest.raises(grpc.RpcError, match=r"sampling\.guidance 2: model 'gauss' \(flow\) has no classifier-free"):
        client.sample("gauss", 5, guidance=2.0)


def test_sample_stream_concatenates_to_the_unary_sample(client: SynthClient) -> None:
    chunks = list(client.sample_stream("gauss", 5_000, proportions={"neg": 1, "pos": 3}, seed=2, chunk_rows=1_000))
    assert [c.attrs["start_row"] for c in chunks] == [0, 1000, 2000, 3000, 4000]
    streamed = pd.concat(chunks, ignore_index=True)
    pd.testing.assert_frame_equal(streamed, client.sample("gauss", 5_000, proportions={"neg": 1, "pos": 3}, seed=2))
    assert streamed["y"].value_counts().to_dict() == {"pos": 3750, "neg": 1250}


def test_balance_fills_the_minority_class(client: SynthClient) -> None:
    data = pd.DataFrame(
        {"x0": np.zeros(13), "x1": np.zeros(13), "cat": ["a"] * 13, "label": ["neg"] * 10 + ["pos"] * 3}
    )
    extra = client.balance(data, "label", "gauss", seed=1)
    assert extra["label"].value_counts().to_dict() == {"pos": 7}
    ratio = client.balance(data, "label", "gauss", strategy="target_ratio", ratio=0.5, seed=1)
    assert ratio["label"].value_counts().to_dict() == {"pos": 2}
    counts = client.balance(data, "label", "gauss", strategy="explicit_counts", counts={"neg": 1, "pos": 2})
    assert counts["label"].tolist() == ["neg", "pos", "pos"]
    nothing = client.balance(data, "label", "gauss", strategy="explicit_counts", counts={})
    assert len(nothing) == 0 and list(nothing.columns) == ["x0", "x1", "cat", "label"]


def test_score_and_encode_accept_the_frames_sample_returns(client: SynthClient) -> None:
    frame = client.sample("gauss", 200, seed=5, version=1)
    scores = client.score("gauss", frame, fpr=0.01, version=1, class_log_density=True)
    assert list(scores.columns) == [
        "log_density",
        "log_density_neg",
        "log_density_pos",
        "posterior_neg",
        "posterior_pos",
        "is_anomaly",
    ]
    rows = np.column_stack([frame["x0"], frame["x1"], [CATEGORIES.index(c) for c in frame["cat"]]])
    log_p, _, posterior = expected_log_prob(rows, version=1)
    np.testing.assert_allclose(scores["log_density"], log_p, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(scores[["posterior_neg", "posterior_pos"]], posterior, atol=1e-5)
    assert scores["is_anomaly"].dtype == bool and scores.attrs["threshold"] == pytest.approx(-6.0)
    assert scores.attrs["threshold_score"] == "log_density"  # the fixture's graph has no anomaly score
    latent = client.encode("gauss", frame, version=1)
    assert latent.shape == (200, 2) and latent.dtype == np.float32


def test_large_tables_go_in_several_requests_with_the_values_of_one(server: ServerThread) -> None:
    """`request_bytes` 2 KB: a 400-row frame goes in ~8 requests; start_row makes the encoder's noise (drawn per
    row index) and so every value the same as one request's."""
    with SynthClient(server.target, timeout_s=30) as whole, SynthClient(server.target, request_bytes=2048) as split:
        frame = whole.sample("gauss", 400, seed=6, version=1)
        before = metric("synthserve_requests_total", {"model": "gauss", "method": "Encode", "code": "OK"})
        pieces = split.encode("gauss", frame, version=1, seed=3)
        requests = metric("synthserve_requests_total", {"model": "gauss", "method": "Encode", "code": "OK"}) - before
        np.testing.assert_array_equal(pieces, whole.encode("gauss", frame, version=1, seed=3))
        pd.testing.assert_frame_equal(
            split.score("gauss", frame, fpr=0.01, version=1), whole.score("gauss", frame, fpr=0.01, version=1)
        )
    assert requests >= 4


def test_unknown_category_label_is_refused_client_side(client: SynthClient) -> None:
    frame = pd.DataFrame({"x0": [0.0], "x1": [0.0], "cat": ["zzz"]})
    with pytest.raises(ValueError, match=r"column 'cat': unknown value\(s\) 'zzz'"):
        client.score("gauss", frame)


@pytest.fixture()
def rolling_update(store: Path, tmp_path: Path) -> Iterator[tuple[ServerThread, ServerThread]]:
    """Two servers mid rolling update: `updated` has gauss v1 and v2, `behind` only v1."""
    behind_store = tmp_path / "behind"
    shutil.copytree(store / "gauss" / "1", behind_store / "gauss" / "1")
    updated, behind = ServerThread(make_config(store)), ServerThread(make_config(behind_store))
    yield updated, behind
    updated.stop()
    behind.stop()


def test_sample_behind_round_robin_describes_a_version_only_one_server_has(
    rolling_update: tuple[ServerThread, ServerThread],
) -> None:
    updated, behind = rolling_update
    target = f"ipv4:127.0.0.1:{updated.port},127.0.0.1:{behind.port}"
    with SynthClient(target, timeout_s=30, lb_policy="round_robin") as client:
        seen: set[tuple[int, ...]] = set()
        for _ in range(50):  # until round_robin has reached both servers
            seen.add(next(m.versions for m in client.models() if m.name == "gauss"))
            if seen == {(1, 2), (1,)}:
                break
        assert seen == {(1, 2), (1,)}
        frames = [client.sample("gauss", 50, seed=seed) for seed in range(1, 9)]
        frames += list(client.sample_stream("gauss", 100, seed=9, chunk_rows=50))
    assert {frame.attrs["version"] for frame in frames} == {1, 2}  # both servers answered
    for frame in frames:
        assert list(frame.columns) == ["x0", "x1", "cat", "y"]
        labels = np.array([CLASSES.index(y) for y in frame["y"]])
        start = frame.attrs.get("start_row", 0)
        expected = expected_rows(frame.attrs["seed"], labels, frame.attrs["version"], start)
        np.testing.assert_allclose(frame[["x0", "x1"]].to_numpy(), expected[:, :2], rtol=2e-6, atol=2e-6)
