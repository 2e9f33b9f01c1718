"""Each family's graphs return the contract's outputs, by name and in order, with the shapes their specs give."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from synthserve.contract import Column, LabelSpec, Schema
from synthserve.contract.graphs import GRAPH_OUTPUTS
from tests.training.mixed_data import FAMILIES
from training.anomaly import fit_anomaly_score
from training.graphs import eager_log_density, graph_specs, random_inputs, run_graph
from training.models import MODELS
from training.neighbors import Neighbors, fit_neighbors
from training.transform import fit_transform


@pytest.mark.parametrize("family", FAMILIES)
def test_graphs_return_the_contract_outputs(family: str) -> None:
    rng = np.random.default_rng(0)
    rows = np.stack([rng.normal(size=200), rng.integers(0, 3, 200), rng.normal(size=200)], axis=1).astype(np.float32)
    schema = Schema(
        (
            Column("a", "continuous", "float64"),
            Column("c", "categorical", "int64", categories=(0, 1, 2)),
            Column("b", "continuous", "float64"),
        ),
        LabelSpec("y", "int64", (0, 1, 2), (0.2, 0.3, 0.5)),
    )
    model_class = MODELS[family]
    transform = fit_transform(rows, schema, categorical=model_class.categorical_encoding, seed=0)
    model = model_class(model_class.config_class(), schema, transform).eval()
    if "log_prob" in model.capabilities():  # without reference rows the log_prob graph returns the first three
        assert tuple(t.name for t in graph_specs(model, schema)["log_prob"].outputs) == GRAPH_OUTPUTS["log_prob"][:3]
        labels = rng.integers(0, 3, 150)
        model.neighbors = Neighbors(fit_neighbors(schema, rows[:150], labels, 3, seed=0))
        model.anomaly = fit_anomaly_score(lambda r: eager_log_density(model, r, 0), model.neighbors, rows[150:])
    specs = graph_specs(model, schema)
    assert tuple(specs) == model.capabilities()
    for graph, spec in specs.items():
        assert spec.file == f"{graph}.onnx"
        assert tuple(t.name for t in spec.outputs) == GRAPH_OUTPUTS[graph]
        with torch.no_grad():
            outputs = run_graph(model, graph, random_inputs(model, spec, 5, torch.Generator().manual_seed(0)))
        assert [tuple(o.shape) for o in outputs] == [(5, *t.row_shape) for t in spec.outputs]
