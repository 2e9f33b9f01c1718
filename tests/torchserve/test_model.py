"""ExportedModel: seed semantics and densities against the tiny models' ground truth, label plans, checksums."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from synthserve.contract import RequestError, SamplingOptions, UnsupportedRequest, draw_noise
from synthserve.contract.sessions import open_session
from tests.torchserve.support import SHIPPED_STORE
from tests.torchserve.tiny_models import COLORS, TINY_MODELS, TinyModel
from torchserve_handler.errors import ArtifactError
from torchserve_handler.model import ExportedModel

COND, UNCOND = TINY_MODELS


@pytest.fixture(scope="module")
def models(tiny_store: Path) -> dict[str, ExportedModel]:
    return {m.name: ExportedModel(tiny_store / m.name / "1") for m in TINY_MODELS}


@pytest.mark.parametrize("truth", TINY_MODELS, ids=lambda m: m.name)
def test_sample_follows_the_noise_rule(models: dict[str, ExportedModel], truth: TinyModel) -> None:
    model = models[truth.name]
    labels = model.plan_labels(40, None, None)
    rows = model.sample(40, 1234, labels)
    expected = truth.expected_rows(1234, labels, 40)
    np.testing.assert_allclose(rows[:, 0], expected["x"], rtol=1e-6)
    np.testing.assert_allclose(rows[:, 3], expected["y"], rtol=1e-6)
    assert [COLORS[int(c)] for c in rows[:, 1]] == expected["color"]
    assert rows[:, 2].astype(int).tolist() == expected["count"]


def test_rows_depend_only_on_seed_label_and_row_index(models: dict[str, ExportedModel]) -> None:
    model = models[COND.name]
    small = model.sample(5, 99, model.plan_labels(5, "pos", None))
    large = model.sample(500, 99, model.plan_labels(500, "pos", None))
    np.testing.assert_array_equal(small, large[:5])
    assert not np.array_equal(small, model.sample(5, 100, model.plan_labels(5, "pos", None)))


@pytest.mark.skipif(not (SHIPPED_STORE / "breast-cancer-diffusion/1").is_dir(), reason="no shipped diffusion")
def test_guidance_runs_the_guided_graph_and_is_refused_without_one(models: dict[str, ExportedModel]) -> None:
    """A guidance weight runs sample_guided with x0 from noise stream 0 and w on every row; w = 1 is the sample
    graph; a model without a guided graph refuses the option."""
    directory = SHIPPED_STORE / "breast-cancer-diffusion" / "1"
    model = ExportedModel(directory)
    labels = np.arange(30, dtype=np.int64) % 2
    rows = model.sample(30, 11, labels, SamplingOptions(guidance=2.5))
    width = model.manifest.graphs["sample_guided"].inputs[0].shape[1]
    session = open_session(directory / "sample_guided.onnx")
    x0 = draw_noise(11, 0, 0, 30, (width,), "normal")
    expected = session.run(None, {"x0": x0, "label": labels, "guidance": np.full(30, 2.5, np.float32)})[0]
    np.testing.assert_array_equal(rows, expected)
    assert not np.array_equal(rows, model.sample(30, 11, labels))
    np.testing.assert_array_equal(
        model.sample(30, 11, labels, SamplingOptions(guidance=1.0)), model.sample(30, 11, labels)
    )
    with pytest.raises(UnsupportedRequest, match=r"sampling\.guidance 2: model 'tiny-cond'"):
        models[COND.name].sample(5, 1, np.zeros(5, np.int64), SamplingOptions(guidance=2.0))


def test_plan_labels(models: dict[str, ExportedModel]) -> None:
    def plan(n_rows: int, label: str | None, proportions: dict[str, float] | None) -> list[int]:
        labels = models[COND.name].plan_labels(n_rows, label, proportions)
        assert labels is not None
        return list(labels.tolist())

    assert plan(10, None, None) == [0] * 7 + [1] * 3  # training priors 0.7 / 0.3
    assert plan(4, "pos", None) == [1, 1, 1, 1]
    assert plan(5, None, {"neg": 1.0, "pos": 1.0}) == [0, 0, 0, 1, 1]
    assert plan(3, None, {"pos": 2.0}) == [1, 1, 1]
    assert models[UNCOND.name].plan_labels(3, None, None) is None


@pytest.mark.parametrize(
    ("model_name", "label", "proportions", "message"),
    [
        ("tiny-cond", "maybe", None, r"label: unknown class label 'maybe' \(classes: \['neg', 'pos'\]\)"),
        ("tiny-cond", None, {"neg": -1.0}, r"proportions\['neg'\] must be a finite number >= 0"),
        ("tiny-cond", None, {"neg": 0.0}, "proportions must have a positive sum"),
        ("tiny-cond", None, {"other": 1.0}, "proportions: unknown class label 'other'"),
        ("tiny-uncond", "neg", None, "label/proportions: model 'tiny-uncond' is unconditional"),
    ],
)
def test_plan_labels_refuses_bad_conditions(
    models: dict[str, ExportedModel],
    model_name: str,
    label: str | None,
    proportions: dict[str, float] | None,
    message: str,
) -> None:
    with pytest.raises(RequestError, match=message):
        models[model_name].plan_labels(3, label, proportions)


@pytest.mark.parametrize("truth", TINY_MODELS, ids=lambda m: m.name)
def test_score_is_the_exact_density(models: dict[str, ExportedModel], truth: TinyModel) -> None:
    model = models[truth.name]
    rows = model.sample(64, 5, model.plan_labels(64, None, None))
    rows[:3, 0] += np.array([10.0, -20.0, 0.5], dtype=np.float32)  # a few far from both classes
    scores = model.score(rows, seed=0)
    log_p, posterior = truth.expected_log_density(rows[:, 0].astype(np.float64), rows[:, 3].astype(np.float64))
    np.testing.assert_allclose(scores.log_density, log_p, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(scores.posteriors, posterior, atol=1e-5)
    assert scores.class_log_density.shape == (64, len(truth.priors))


def _append_a_byte(name: str) -> Callable[[Path], None]:
    def corrupt(directory: Path) -> None:
        with (directory / name).open("ab") as graph:
            graph.write(b"\0")

    return corrupt


def _edit_manifest(change: Callable[[dict[str, Any]], object]) -> Callable[[Path], None]:
    def corrupt(directory: Path) -> None:
        manifest = json.loads((directory / "manifest.json").read_text())
        change(manifest)
        (directory / "manifest.json").write_text(json.dumps(manifest))

    return corrupt


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (_append_a_byte("log_prob.onnx"), r"log_prob\.onnx has sha256 [0-9a-f]{64}, manifest says [0-9a-f]{64}"),
        (
            _edit_manifest(lambda m: m["files"].pop("sample.onnx")),
            r"sample\.onnx is not listed in the manifest's files",
        ),
        (_edit_manifest(lambda m: m.update(format_version=99)), "format_version 99 is not supported"),
        (
            _edit_manifest(lambda m: m["graphs"]["sample"]["inputs"][0].update(name="noise")),
            r"graphs.sample: ONNX inputs \['label', 'u', 'z'\] differ from the manifest's",
        ),
    ],
    ids=["checksum", "unlisted-graph", "format-version", "input-names"],
)
def test_refuses_a_broken_artifact(
    tiny_store: Path, tmp_path: Path, corrupt: Callable[[Path], None], message: str
) -> None:
    directory = tmp_path / COND.name / "1"
    shutil.copytree(tiny_store / COND.name / "1", directory)
    corrupt(directory)
    with pytest.raises(ArtifactError, match=message):
        ExportedModel(directory)
