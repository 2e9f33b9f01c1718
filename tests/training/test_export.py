"""Export contracts: parity failures are loud; an exported flow's density integrates to one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from training.cli import main as cli_main
from training.export import ExportError, _compare
from training.exported import ExportedModel


def test_parity_failure_is_loud() -> None:
    rng = np.random.default_rng(0)
    eager = rng.normal(size=(1024, 3)).astype(np.float32)
    discrete = np.array([False, False, True])
    eager[:, 2] = np.floor(eager[:, 2])
    assert _compare("sample", "rows", eager, eager.copy(), discrete, "ONNX")["relative_rms"] == 0.0
    drifted = eager.copy()
    drifted[:, 0] *= 1.001
    with pytest.raises(ExportError, match=r"sample\.rows at batch 1024: per-column relative RMS"):
        _compare("sample", "rows", eager, drifted, discrete, "ONNX")
    flipped = eager.copy()
    flipped[:20, 2] += 1  # 2% of a discrete column flips: more than rounding explains
    with pytest.raises(ExportError, match="discrete flips"):
        _compare("sample", "rows", eager, flipped, discrete, "ONNX")
    rare = eager.copy()
    rare[:3, 2] += 1
    assert _compare("sample", "rows", eager, rare, discrete, "ONNX")["discrete_flips"] < 0.01


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
