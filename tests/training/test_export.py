"""Export contracts: an exported flow's density integrates to one; the tracing exporter keeps every graph input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from synthserve.contract import load_manifest
from training.cli import main as cli_main
from training.exported import ExportedModel, feeds_for


def test_flow_density_integrates_to_one(tmp_path: Path) -> None:
    """Riemann sum of exp(log p) over a 2-D grid that covers the data (unconditional flow, ONNX graph)."""
    rng = np.random.default_rng(0)
    n = 600
    angle = rng.uniform(0, 2 * np.pi, n)
    frame = pd.DataFrame({"x": 3 * np.cos(angle) + rng.normal(0, 0.3, n), "y": np.sin(angle) + rng.normal(0, 0.3, n)})
    path = tmp_path / "ring.csv"
    frame.to_csv(path, index=False)
    argv = ["train", "--data", str(path), "--model", "flow", "--name", "ring", "--model-store", str(tmp_path)]
    assert cli_main([*argv, "--epochs", "40", "--threads", "1", "--no-progress"]) == 0
    model = ExportedModel(tmp_path / "ring" / "1")
    xs = np.arange(-10, 10, 0.02)  # the piecewise-linear transform has kinks: a fine grid is needed
    ys = np.arange(-6, 6, 0.02)
    grid = np.stack(np.meshgrid(xs, ys, indexing="ij"), axis=-1).reshape(-1, 2).astype(np.float32)
    log_prob, _, _ = model.log_prob(grid)
    mass = float(np.exp(log_prob.astype(np.float64)).sum() * (xs[1] - xs[0]) * (ys[1] - ys[0]))
    assert abs(mass - 1.0) < 0.02, mass


@pytest.mark.parametrize("family", ["flow", "gan"])
def test_tracing_exporter_keeps_every_graph_input(tmp_path: Path, mixed_csv: Path, family: str) -> None:
    """`--onnx-exporter torchscript`: graphs keep the inputs their spec names (dynamo takes over a graph the
    tracer would prune, a GAN's encode label), match the TorchScript module, and `--no-plots` writes no PNG."""
    argv = ["train", "--data", str(mixed_csv), "--model", family, "--name", "m", "--label", "outcome"]
    argv += ["--model-store", str(tmp_path), "--epochs", "2", "--threads", "1", "--no-progress", "--accept-weak-model"]
    assert cli_main([*argv, "--onnx-exporter", "torchscript", "--no-plots"]) == 0
    directory = tmp_path / "m" / "1"
    manifest = load_manifest(directory)
    exporters = manifest.metrics["export_parity"]["onnx_exporters"]
    expected = {"sample": "torchscript", "log_prob": "torchscript", "encode": "torchscript"}
    if family == "gan":
        expected = {"sample": "torchscript", "encode": "dynamo"}
    assert exporters == expected
    assert not list(directory.glob("*.png"))
    assert (directory / "report.json").exists()
    model = ExportedModel(directory)
    for name, spec in manifest.graphs.items():
        assert [i.name for i in model.sessions[name].get_inputs()] == [t.name for t in spec.inputs]
    labels = np.array([0, 1, 1, 0, 1], dtype=np.int64)
    feeds = feeds_for(manifest.graphs["sample"], seed=5, start_row=0, n_rows=5, label=labels)
    scripted = torch.jit.load(str(directory / "model.pt"))
    (rows,) = scripted.sample(*[torch.from_numpy(feeds[t.name]) for t in manifest.graphs["sample"].inputs])
    np.testing.assert_allclose(rows.numpy(), model.sample(labels, seed=5), rtol=1e-4, atol=1e-3)
