"""Export contracts: parity failures are loud (float32 rounding is not one); an exported flow's density integrates
to one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from synthserve.contract import load_manifest
from training.cli import main as cli_main
from training.export import PARITY_ROUNDING_FACTOR, ExportError, _compare, _EagerOutput
from training.exported import ExportedModel, feeds_for


def _measured(graph: str, eager: np.ndarray, rng: np.random.Generator) -> _EagerOutput:
    """`eager` with what float32 rounding does to it: float64 reference half an ulp away, nudged copies ~1 ulp."""
    exact = eager.astype(np.float64)
    reference = exact * (1 + 2.0**-24 * rng.uniform(-1, 1, eager.shape))
    nudged = [exact * (1 + 2.0**-23 * rng.normal(size=eager.shape)) for _ in range(4)]
    return _EagerOutput.measure(graph, eager, reference, nudged)


def test_parity_failure_is_loud() -> None:
    """Float32 rounding passes; a drift of 1e-5 (a tenth of the former fixed limit) fails, with advice."""
    rng = np.random.default_rng(0)
    eager = rng.normal(size=(1024, 3)).astype(np.float32)
    discrete = np.array([False, False, True])
    eager[:, 2] = np.floor(eager[:, 2])
    measured = _measured("sample", eager, rng)
    assert _compare("sample", "rows", measured, eager.copy(), discrete, "ONNX")["rounding_ratio"] == 0.0
    rounded = (eager.astype(np.float64) * (1 + 2.0**-23 * rng.normal(size=eager.shape))).astype(np.float32)
    rounded[:, 2] = eager[:, 2]
    assert _compare("sample", "rows", measured, rounded, discrete, "ONNX")["rounding_ratio"] < PARITY_ROUNDING_FACTOR
    drifted = eager.copy()
    drifted[:, 0] *= 1 + 1e-5
    advice = "Retry with --onnx-exporter torchscript."
    with pytest.raises(ExportError, match=r"sample\.rows at batch 1024: \d+\.\dx the float32 rounding .*\. Retry"):
        _compare("sample", "rows", measured, drifted, discrete, "ONNX", advice)
    one_row = _measured("sample", eager[:1], rng)  # small batches pool the columns: one row is no statistic
    with pytest.raises(ExportError, match=r"at batch 1: .*, RMS over the columns\)"):
        _compare("sample", "rows", one_row, drifted[:1], discrete, "ONNX")
    flipped = eager.copy()
    flipped[:20, 2] += 1  # 2% of the rows flip a discrete value: more than rounding explains
    with pytest.raises(ExportError, match=r"discrete values or gaps differ in 0\.0195 of the rows"):
        _compare("sample", "rows", measured, flipped, discrete, "ONNX")
    rare = eager.copy()
    rare[:3, 2] += 1
    rare[3, 0] = np.nan  # a gap where eager has a value: one more flipped row
    assert _compare("sample", "rows", measured, rare, discrete, "ONNX")["discrete_flips"] == 4 / 1024


def test_non_finite_density_is_loud() -> None:
    rng = np.random.default_rng(1)
    eager = rng.normal(-5.0, 1.0, size=64).astype(np.float32)
    actual = eager.copy()
    actual[7] = -np.inf
    with pytest.raises(ExportError, match=r"log_prob\.log_prob: non-finite values where eager has finite ones"):
        _compare("log_prob", "log_prob", _measured("log_prob", eager, rng), actual, np.zeros(0, bool), "ONNX")


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
