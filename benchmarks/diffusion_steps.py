"""Diffusion sampler: realism against the number of solver steps, to justify the exported default (8 Heun steps).

The trained weights do not depend on the solver (it only integrates the learned velocity), so every diffusion
version with a `checkpoint.pt` under `--model-store` is rebuilt once per (solver, steps) from its checkpoint and
sampled in eager torch with the server's noise for the version's held-out classes (seed 7, as training's own
evaluation draws them; the exported graphs compute the same rows to float32 rounding, `training.parity`). Printed
per model and averaged: the two-sample AUC against the held-out rows (0.5 = indistinguishable) and the mean
per-column KS statistic, with the network evaluations each row costs (Euler: steps, Heun: 2 x steps).
Usage: python benchmarks/diffusion_steps.py [--model-store model_store] [--steps 2,4,8,16,32]
"""

# ruff: noqa: E402  (sys.path is fixed before the package imports)
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]

import argparse
import dataclasses
import time

import numpy as np
import torch

from synthserve.contract import draw_noise, latest_versions, load_manifest
from training.checkpoint import CHECKPOINT_FILE, load_checkpoint
from training.evaluate import sample_metrics
from training.features import EVALUATION_SEED, served_rows
from training.models import DiffusionModel
from training.models.diffusion import SOLVERS
from training.reevaluate import prepare_version_data


def diffusion_versions(store: Path) -> list[Path]:
    """The latest version of every diffusion model in `store` that kept its checkpoint."""
    return [
        version
        for version in latest_versions(store).values()
        if (version / CHECKPOINT_FILE).is_file() and load_manifest(version).family == "diffusion"
    ]


def with_solver(model: DiffusionModel, solver: str, steps: int) -> DiffusionModel:
    config = dataclasses.replace(model.config, solver=solver, solver_steps=steps)
    rebuilt = DiffusionModel(config, model.schema, model.transform)
    rebuilt.load_state_dict(model.state_dict())
    return rebuilt.eval()


def evaluations(solver: str, steps: int) -> int:
    """Network evaluations a row costs: one per Euler step, two per Heun step."""
    return steps * (2 if solver == "heun" else 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-store", type=Path, action="append", default=None, help="repeatable")
    parser.add_argument("--steps", default="2,4,8,16,32", help="solver steps, comma-separated")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    steps = [int(s) for s in args.steps.split(",")]
    directories = [d for store in args.model_store or [ROOT / "model_store"] for d in diffusion_versions(store)]
    if not directories:
        print("no diffusion version with a checkpoint in the store(s)", file=sys.stderr)
        return 2
    started = time.perf_counter()
    print(f"{'model':<28} {'solver':<6} {'steps':>5} {'evals/row':>9} {'c2st':>7} {'ks':>7}")
    results: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for directory in directories:
        manifest = load_manifest(directory)
        prepared = prepare_version_data(manifest)
        heldout = prepared.split.heldout
        labels = prepared.labels[heldout]
        trained = load_checkpoint(directory / CHECKPOINT_FILE)
        assert isinstance(trained, DiffusionModel)
        x0 = torch.from_numpy(draw_noise(EVALUATION_SEED, 0, 0, len(labels), (trained.width,), "normal"))
        for solver in SOLVERS:
            for n in steps:
                with torch.no_grad():
                    rows = with_solver(trained, solver, n).sample([x0], torch.from_numpy(labels)).numpy()
                synthetic = served_rows(rows, manifest.schema)
                metrics = sample_metrics(prepared.rows[heldout], labels, synthetic, manifest.schema)
                ks = metrics["mean_ks"] if metrics["mean_ks"] is not None else float("nan")
                results.setdefault((solver, n), []).append((metrics["c2st_auc"], ks))
                figures = f"{evaluations(solver, n):>9} {metrics['c2st_auc']:>7.3f} {ks:>7.3f}"
                print(f"{manifest.name:<28} {solver:<6} {n:>5} {figures}")
    print(f"mean over {len(directories)} models")
    for (solver, n), figures in results.items():
        c2st = np.mean([f[0] for f in figures])
        ks = np.nanmean([f[1] for f in figures]) if any(np.isfinite(f[1]) for f in figures) else float("nan")
        print(f"{'':<28} {solver:<6} {n:>5} {evaluations(solver, n):>9} {c2st:>7.3f} {ks:>7.3f}")
    print(f"# {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
