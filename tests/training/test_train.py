"""The loop: reproducible from the seed, early stopping, and 2-process data parallelism under torchrun."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from synthserve.contract import Column, LabelSpec, Schema, load_manifest
from tests.training.mixed_data import FAMILIES
from training.models import MODELS, build_model
from training.train import TrainConfig, train_model
from training.transform import fit_transform


def _toy(n: int = 300) -> tuple[Schema, torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(0)
    label = rng.integers(0, 2, n)
    rows = np.stack([rng.normal(3 * label, 1.0), rng.normal(0, 1 + label), rng.integers(0, 3, n)], axis=1)
    schema = Schema(
        (
            Column("a", "continuous", "float64"),
            Column("b", "continuous", "float64"),
            Column("c", "categorical", "int64", categories=(0, 1, 2)),
        ),
        LabelSpec("y", "int64", (0, 1), (0.5, 0.5)),
    )
    return schema, torch.tensor(rows, dtype=torch.float32), torch.tensor(label)


def _train(family: str, seed: int, config: TrainConfig) -> tuple[dict[str, torch.Tensor], list[float]]:
    schema, rows, labels = _toy()
    params = fit_transform(rows.numpy()[:250], schema, categorical=MODELS[family].categorical_encoding, seed=seed)
    torch.manual_seed(seed)
    model = build_model(family, MODELS[family].config_class(), schema, params)
    result = train_model(model, (rows[:250], labels[:250]), (rows[250:], labels[250:]), config)
    return model.state_dict(), result.history["validation_loss"]


@pytest.mark.parametrize("family", FAMILIES)
def test_same_seed_same_weights(family: str) -> None:
    config = TrainConfig(epochs=3, batch_size=64, seed=4, progress=False)
    first, losses = _train(family, 4, config)
    second, again = _train(family, 4, config)
    assert losses == again
    assert all(torch.equal(first[k], second[k]) for k in first)
    other, _ = _train(family, 5, TrainConfig(epochs=3, batch_size=64, seed=5, progress=False))
    assert any(not torch.equal(first[k], other[k]) for k in first if first[k].is_floating_point())


def test_early_stopping_keeps_the_best_epoch() -> None:
    schema, rows, labels = _toy()
    params = fit_transform(rows.numpy()[:250], schema, categorical="ordinal", seed=0)
    torch.manual_seed(0)
    model = build_model("flow", MODELS["flow"].config_class(), schema, params)
    # A large learning rate on 250 rows overfits quickly; patience 3 must stop long before 500 epochs.
    config = TrainConfig(epochs=500, batch_size=32, learning_rate=1e-2, patience=3, progress=False)
    result = train_model(model, (rows[:250], labels[:250]), (rows[250:], labels[250:]), config)
    assert result.epochs_run < 500 and result.epochs_run == result.best_epoch + 4
    assert result.best_validation_loss == min(result.history["validation_loss"])


MULTINODE_JOB = Path(__file__).resolve().parents[2] / "k8s" / "training-multinode" / "job.yaml"


def _torchrun_train(store: Path, mixed_csv: Path, launcher: list[str]) -> list[subprocess.Popen[str]]:
    """`torchrun <launcher> -m training.cli train` on the mixed table; one Popen per launcher (node)."""
    command = [str(Path(sys.executable).parent / "torchrun"), *launcher, "-m", "training.cli", "train"]
    command += ["--data", str(mixed_csv), "--model", "flow", "--name", "ddp", "--label", "outcome"]
    command += ["--model-store", str(store), "--epochs", "2", "--device", "cpu", "--threads", "1", "--no-progress"]
    command += ["--no-plots"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)]


def _finish(processes: list[subprocess.Popen[str]]) -> None:
    for process in processes:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-3000:]


def _multinode_launchers(port: int) -> list[list[str]]:
    """The k8s/training-multinode Job's torchrun flags for each of its pods, with pod 0's address on loopback."""
    spec = yaml.safe_load(MULTINODE_JOB.read_text())["spec"]
    args = spec["template"]["spec"]["containers"][0]["args"]
    local = {"--master-addr": "127.0.0.1", "--master-port": str(port)}
    launchers = []
    for index in range(spec["completions"]):
        flags = [arg.replace("$(NODE_RANK)", str(index)) for arg in args[: args.index("-m")]]
        launchers.append(
            [f"{f.split('=')[0]}={local[f.split('=')[0]]}" if f.split("=")[0] in local else f for f in flags]
        )
    return launchers


def test_torchrun_two_processes_on_one_node_and_as_two_nodes(tmp_path: Path, mixed_csv: Path) -> None:
    """Two gloo processes train one model; only rank 0 publishes it. The multi-node Job's rendezvous (two torchrun
    agents meeting at node 0), run here as two local agents, trains the same model."""
    _finish(_torchrun_train(tmp_path / "one", mixed_csv, ["--standalone", "--nproc_per_node", "2"]))
    assert [p.name for p in (tmp_path / "one" / "ddp").iterdir()] == ["1"]
    manifest = load_manifest(tmp_path / "one" / "ddp" / "1")
    assert manifest.metrics["epochs_run"] == 2

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    launchers = _multinode_launchers(port)
    assert len(launchers) == 2 and all("--nnodes=2" in launcher for launcher in launchers)
    nodes = [p for launcher in launchers for p in _torchrun_train(tmp_path / "two", mixed_csv, launcher)]
    _finish(nodes)
    assert [p.name for p in (tmp_path / "two" / "ddp").iterdir()] == ["1"]
    across = load_manifest(tmp_path / "two" / "ddp" / "1")
    # World size 2 either way: the same shards, the same all-reduced gradients, the same model.
    assert across.metrics["epochs_run"] == 2
    assert across.metrics["best_validation_loss"] == manifest.metrics["best_validation_loss"]
    assert across.files["sample.onnx"] == manifest.files["sample.onnx"]
