"""A checkpoint rebuilds its model: same family, config, schema, transform and weights, so the same outputs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from synthserve.contract import Column, LabelSpec, Schema, load_manifest
from tests.training.mixed_data import FAMILIES
from training.checkpoint import CHECKPOINT_FILE, load_checkpoint, save_checkpoint
from training.graphs import graph_specs, random_inputs, run_graph
from training.models import MODELS, GenerativeModel
from training.train import TrainConfig, train_model
from training.transform import fit_transform


def _trained(family: str) -> GenerativeModel:
    """A model trained two epochs on a toy table with a gap-holding column and a categorical one."""
    rng = np.random.default_rng(0)
    n = 300
    label = rng.integers(0, 2, n)
    rows = np.stack([rng.normal(3 * label, 1.0), rng.poisson(4 + label, n), rng.integers(0, 3, n)], axis=1)
    rows = rows.astype(np.float32)
    rows[rng.random(n) < 0.1, 1] = np.nan
    schema = Schema(
        (
            Column("a", "continuous", "float64", min=float(rows[:, 0].min()), max=float(rows[:, 0].max())),
            Column("b", "integer", "int64", min=0.0, max=float(np.nanmax(rows[:, 1])), missing_rate=0.1),
            Column("c", "categorical", "object", categories=("x", "y", "z")),
        ),
        LabelSpec("y", "int64", (0, 1), (0.5, 0.5)),
    )
    model_class = MODELS[family]
    transform = fit_transform(rows[:250], schema, categorical=model_class.categorical_encoding, seed=0)
    torch.manual_seed(0)
    model = model_class(model_class.config_class(), schema, transform)
    data = torch.from_numpy(rows), torch.from_numpy(label)
    config = TrainConfig(epochs=2, batch_size=64, progress=False)
    train_model(model, (data[0][:250], data[1][:250]), (data[0][250:], data[1][250:]), config)
    return model.eval()


@pytest.mark.parametrize("family", FAMILIES)
def test_save_then_load_rebuilds_the_model(tmp_path: Path, family: str) -> None:
    model = _trained(family)
    save_checkpoint(model, tmp_path / CHECKPOINT_FILE)
    rebuilt = load_checkpoint(tmp_path / CHECKPOINT_FILE)
    assert type(rebuilt) is type(model) and rebuilt.config == model.config and rebuilt.schema == model.schema
    for field in dataclasses.fields(model.transform):
        np.testing.assert_array_equal(getattr(rebuilt.transform, field.name), getattr(model.transform, field.name))
    state, rebuilt_state = model.state_dict(), rebuilt.state_dict()
    assert state.keys() == rebuilt_state.keys() and all(torch.equal(state[k], rebuilt_state[k]) for k in state)
    # Every graph, on the same inputs (noise included), gives the same outputs bit for bit.
    for graph, spec in graph_specs(model, model.schema).items():
        inputs = random_inputs(model, spec, 64, torch.Generator().manual_seed(3))
        with torch.no_grad():
            expected, actual = run_graph(model, graph, inputs), run_graph(rebuilt, graph, inputs)
        for e, a in zip(expected, actual, strict=True):
            torch.testing.assert_close(a, e, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("family", FAMILIES)
def test_published_checkpoint_rebuilds_the_published_model(trained_store: Path, family: str) -> None:
    """The pipeline's checkpoint rebuilds the model its manifest describes and its TorchScript module computes."""
    version = trained_store / f"mixed-{family}" / "1"
    manifest = load_manifest(version)
    assert CHECKPOINT_FILE not in manifest.files
    model = load_checkpoint(version / CHECKPOINT_FILE)
    assert model.family == manifest.family and model.schema == manifest.schema
    assert graph_specs(model, model.schema) == manifest.graphs
    assert dataclasses.asdict(model.config) == manifest.training["family_config"]
    scripted = torch.jit.load(str(version / "model.pt"))
    inputs = random_inputs(model, manifest.graphs["sample"], 32, torch.Generator().manual_seed(0))
    with torch.no_grad():
        (expected,) = scripted.sample(*inputs)
        (actual,) = run_graph(model, "sample", inputs)
    torch.testing.assert_close(actual, expected, equal_nan=True)
