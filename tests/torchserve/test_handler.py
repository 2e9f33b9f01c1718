"""The handler inside real TorchServe 0.12: same rows as the noise rule, the in-process graphs and synthserve's
own server for the same seed; exact densities; 400s that name the field; the archive's own contract in use."""

from __future__ import annotations

import io
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from benchmarks.torchserve_vs_synthserve import synthserve_server
from synthserve.contract import draw_noise, load_manifest
from tests.torchserve.support import SHIPPED_MODEL, SHIPPED_STORE, assert_rows_equal, post, post_json, shipped_available
from tests.torchserve.tiny_models import TINY_MODELS, TinyModel
from torchserve_handler.local import LocalTorchServe

COND, UNCOND = TINY_MODELS
needs_shipped = pytest.mark.skipif(not shipped_available(), reason=f"model_store/{SHIPPED_MODEL}/1 not shipped yet")


def predict(server: LocalTorchServe, model: str, body: dict[str, Any]) -> tuple[int, Any]:
    return post_json(f"{server.inference_url}/predictions/{model}", body)


@pytest.mark.parametrize(
    ("truth", "body", "labels"),
    [
        (COND, {"n": 25, "seed": 7}, [0] * 18 + [1] * 7),  # priors 0.7/0.3: 17.5 and 7.5, the tie to class 0
        (COND, {"n": 9, "seed": 8, "label": "pos"}, [1] * 9),
        (COND, {"n": 5, "seed": 2**64 - 1, "proportions": {"pos": 3, "neg": 2}}, [0, 0, 1, 1, 1]),
        (UNCOND, {"n": 12, "seed": 0}, None),
    ],
    ids=["priors", "label", "proportions", "unconditional"],
)
def test_sample_follows_the_noise_rule(
    torchserve: LocalTorchServe, truth: TinyModel, body: dict[str, Any], labels: list[int] | None
) -> None:
    status, response = predict(torchserve, truth.name, body)
    assert status == 200, response
    assert (response["seed"], response["num_rows"], response["version"]) == (body["seed"], body["n"], 1)
    expected = truth.expected_rows(body["seed"], None if labels is None else np.asarray(labels), body["n"])
    assert_rows_equal(response["rows"], expected)


def test_sample_as_npy_with_the_seed_in_a_header(torchserve: LocalTorchServe) -> None:
    url = f"{torchserve.inference_url}/predictions/{COND.name}"
    status, headers, body = post(url, {"n": 25, "seed": 7, "encoding": "npy"})
    assert status == 200, body
    assert headers["content-type"] == "application/x-npy"
    assert (headers["x-synthserve-seed"], headers["x-synthserve-version"]) == ("7", "1")
    array = np.load(io.BytesIO(body), allow_pickle=False)
    expected = COND.expected_rows(7, np.asarray([0] * 18 + [1] * 7), 25)
    np.testing.assert_allclose(array[:, 3], expected["y"], rtol=1e-6)
    assert array[:, 2].tolist() == expected["count"]
    assert array[:, 4].tolist() == [0.0] * 18 + [1.0] * 7


def test_score_is_the_exact_density(torchserve: LocalTorchServe) -> None:
    _, sampled = predict(torchserve, COND.name, {"n": 40, "seed": 5})
    rows = sampled["rows"]
    rows["y"][0] = 60.0
    status, response = predict(torchserve, COND.name, {"rows": rows, "fpr": 0.01})
    assert status == 200, response
    log_p, posterior = COND.expected_log_density(np.asarray(rows["x"]), np.asarray(rows["y"]))
    np.testing.assert_allclose(response["log_density"], log_p, rtol=1e-5)
    np.testing.assert_allclose(response["posterior"]["neg"], posterior[:, 0], atol=1e-5)
    assert response["is_anomaly"] == (log_p < response["threshold"]).tolist()
    assert response["is_anomaly"][0] is True


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"n": 0}, r"n: must be in \[1, 10000\], got 0"),
        ({"n": 2, "label": "yes"}, r"label: unknown class label 'yes' \(classes: \['neg', 'pos'\]\)"),
        ({"rows": {"x": [1.0]}}, r"rows: missing column\(s\) \['color', 'count', 'y'\]"),
    ],
)
def test_bad_requests_answer_400_naming_the_field(
    torchserve: LocalTorchServe, body: dict[str, Any], message: str
) -> None:
    status, response = predict(torchserve, COND.name, body)
    assert status == 400
    assert re.search(message, response["error"]), response


def test_workers_import_the_archived_contract(torchserve: LocalTorchServe) -> None:
    log = (torchserve.log_dir / "model_log.log").read_text()
    loaded = re.findall(r"synthserve handler: (\S+) version \d+ from (\S+), contract (\S+)", log)
    assert {name for name, _, _ in loaded} >= {m.name for m in TINY_MODELS}
    for _, model_dir, contract in loaded:
        assert Path(contract) == Path(model_dir) / "synthserve" / "contract"


def _direct_rows(seed: int, labels: np.ndarray) -> dict[str, list[Any]]:
    """The shipped sample graph run here with onnxruntime and the contract's noise rule, in training terms."""
    directory = SHIPPED_STORE / SHIPPED_MODEL / "1"
    manifest = load_manifest(directory)
    spec = manifest.graphs["sample"]
    feeds: dict[str, np.ndarray] = {}
    noise = [t for t in spec.inputs if t.role == "noise"]
    for stream, tensor in enumerate(noise):
        assert tensor.distribution is not None
        feeds[tensor.name] = draw_noise(seed, stream, 0, len(labels), tensor.row_shape, tensor.distribution)
    feeds.update({t.name: labels for t in spec.inputs if t.role == "label"})
    session = ort.InferenceSession(str(directory / spec.file), providers=["CPUExecutionProvider"])
    (rows,) = session.run(None, feeds)
    out: dict[str, list[Any]] = {}
    for index, column in enumerate(manifest.schema.columns):
        if column.kind == "continuous":  # within the training range, with the column's decimals
            values = np.clip(rows[:, index].astype(float), column.min, column.max)
            out[column.name] = (values if column.decimals is None else np.round(values, column.decimals)).tolist()
        elif column.kind == "integer":
            out[column.name] = np.clip(np.rint(rows[:, index]), column.min, column.max).astype(int).tolist()
        else:
            assert column.categories is not None
            codes = np.clip(np.rint(rows[:, index]).astype(int), 0, len(column.categories) - 1)
            out[column.name] = [column.categories[c] for c in codes]
    assert manifest.schema.label is not None
    out[manifest.schema.label.name] = [manifest.schema.label.classes[c] for c in labels]
    return out


@needs_shipped
def test_shipped_model_rows_equal_the_graph_run_in_process(torchserve: LocalTorchServe) -> None:
    manifest = load_manifest(SHIPPED_STORE / SHIPPED_MODEL / "1")
    assert manifest.schema.label is not None
    priors = np.asarray(manifest.schema.label.priors)
    n_rows = 64
    shares = n_rows * priors / priors.sum()
    counts = np.floor(shares).astype(int)
    counts[np.argsort(-(shares - counts), kind="stable")[: n_rows - counts.sum()]] += 1
    labels = np.repeat(np.arange(len(priors)), counts)
    status, response = predict(torchserve, SHIPPED_MODEL, {"n": n_rows, "seed": 1234})
    assert status == 200, response
    assert_rows_equal(response["rows"], _direct_rows(1234, labels))
    second = str(manifest.schema.label.classes[1])
    _, labelled = predict(torchserve, SHIPPED_MODEL, {"n": 10, "seed": 99, "label": second})
    assert_rows_equal(labelled["rows"], _direct_rows(99, np.ones(10, dtype=np.int64)))


@pytest.fixture(scope="module")
def synthserve_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`synthserve serve` on loopback with the shipped model only (the benchmark's launcher), for this module."""
    store = tmp_path_factory.mktemp("synthserve") / "store"
    shutil.copytree(
        SHIPPED_STORE / SHIPPED_MODEL / "1", store / SHIPPED_MODEL / "1", ignore=shutil.ignore_patterns("checkpoint.pt")
    )
    with synthserve_server(store, workers=1, timeout_s=60) as target:
        yield target


@needs_shipped
@pytest.mark.parametrize(
    ("n_rows", "seed", "label", "options"),
    [(64, 1234, None, {}), (10, 99, 1, {}), (300, 2**63 + 5, 0, {}), (40, 5, 1, {"temperature": 0.8, "best_of": 3})],
)
def test_shipped_model_rows_equal_synthserve_sample(
    torchserve: LocalTorchServe, synthserve_target: str, n_rows: int, seed: int, label: Any, options: dict[str, Any]
) -> None:
    from serving.client import SynthClient

    body: dict[str, Any] = {"n": n_rows, "seed": seed} | ({} if label is None else {"label": label}) | options
    status, response = predict(torchserve, SHIPPED_MODEL, body)
    assert status == 200, response
    with SynthClient(synthserve_target) as client:
        frame = client.sample(SHIPPED_MODEL, n_rows, label=label, seed=seed, **options)
    assert frame.attrs["seed"] == seed
    assert_rows_equal(response["rows"], {name: frame[name].tolist() for name in frame.columns})
