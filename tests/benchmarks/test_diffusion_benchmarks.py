"""The guidance and solver-step benchmarks end to end: on the shipped breast-cancer diffusion model (guidance) and
on a small diffusion model trained here (solver steps, which needs the checkpoint that git does not ship)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from training.pipeline import TrainRequest, train_and_publish

ROOT = Path(__file__).resolve().parents[2]


def _run(script: str, *args: str) -> str:
    command = [sys.executable, str(ROOT / "benchmarks" / script), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, check=True).stdout


def test_guidance_benchmark_measures_each_weight() -> None:
    out = _run("guidance.py", "--models", "breast-cancer-diffusion", "--weights", "0,1,3")
    rows = [line.split() for line in out.splitlines() if line.startswith("breast-cancer-diffusion")]
    figures = {
        float(r[1]): dict(zip(("c2st", "ks", "tv", "class_acc", "tstr", "trtr"), map(float, r[2:]))) for r in rows
    }
    assert sorted(figures) == [0.0, 1.0, 3.0], out
    # w = 0 draws either class: a classifier of real rows finds the requested class far less often than at w = 3.
    assert figures[0.0]["class_acc"] < 0.7 < 0.9 < figures[3.0]["class_acc"], figures
    assert figures[1.0]["c2st"] < figures[3.0]["c2st"], figures  # guidance trades realism for separation
    assert figures[1.0]["c2st"] == pytest.approx(0.473, abs=0.01)  # the shipped model's own evaluation


def test_solver_step_benchmark_rebuilds_a_checkpoint_per_solver(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    request = TrainRequest(
        data="sklearn:wine",
        family="diffusion",
        name="wine-diffusion",
        model_store=tmp_path,
        epochs=5,
        progress=False,
        plots=False,
        onnx_exporter="torchscript",
        accept_weak=True,
    )
    assert train_and_publish(request) is not None
    out = _run("diffusion_steps.py", "--model-store", str(tmp_path), "--steps", "1,8")
    rows = {(r[1], int(r[2])): r for r in (line.split() for line in out.splitlines()) if r and r[0] == "wine-diffusion"}
    assert set(rows) == {("euler", 1), ("euler", 8), ("heun", 1), ("heun", 8)}, out
    assert [int(rows[key][3]) for key in sorted(rows)] == [1, 8, 2, 16]  # network evaluations per row
    assert all(0.0 <= float(r[4]) <= 1.0 for r in rows.values())
