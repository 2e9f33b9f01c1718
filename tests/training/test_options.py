"""`--option KEY=VALUE`: typed by the family's config or the training loop's settings, refused with the field named."""

from __future__ import annotations

from pathlib import Path

import pytest

from synthserve.contract import load_manifest
from training.cli import main as cli_main
from training.models.autoregressive import AUTOREGRESSIVE_LEARNING_RATE, AutoregressiveConfig
from training.models.flow import FlowConfig
from training.options import OptionError, split_options
from training.train import TrainConfig


def test_options_are_typed_by_the_family_config() -> None:
    assert split_options(FlowConfig, ["coupling=spline", "spline_bins=12", "spline_bound=3"]) == (
        {"coupling": "spline", "spline_bins": 12, "spline_bound": 3.0},
        {},
    )
    with pytest.raises(OptionError, match="colour: not a FlowConfig field"):
        split_options(FlowConfig, ["colour=red"])
    with pytest.raises(OptionError, match="spline_bins=many: expected an integer"):
        split_options(FlowConfig, ["spline_bins=many"])
    with pytest.raises(OptionError, match=r"coupling must be one of \('affine', 'spline'\), got 'curvy'"):
        split_options(FlowConfig, ["coupling=curvy"])
    assert cli_main(["train", "--data", "sklearn:wine", "--model", "flow", "--name", "w", "--option", "coupling"]) == 2


def test_training_settings_go_to_the_loop_and_are_checked() -> None:
    family, training = split_options(
        AutoregressiveConfig, ["hidden=64", "learning_rate=3e-3", "batch_size=512", "patience=10"]
    )
    assert family == {"hidden": 64}
    assert training == {"learning_rate": 0.003, "batch_size": 512, "patience": 10}
    with pytest.raises(OptionError, match=r"learning_rate=0\.0: must be above 0"):
        split_options(AutoregressiveConfig, ["learning_rate=0"])
    with pytest.raises(OptionError, match="batch_size=1: must be at least 2"):
        split_options(AutoregressiveConfig, ["batch_size=1"])
    with pytest.raises(OptionError, match=r"weight_decay=-1\.0: must be at least 0"):
        split_options(AutoregressiveConfig, ["weight_decay=-1"])
    with pytest.raises(OptionError, match="seed: not a AutoregressiveConfig field or training setting"):
        split_options(AutoregressiveConfig, ["seed=3"])  # --seed has its own flag


def test_cli_trains_with_the_training_settings_and_records_them(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["train", "--data", "sklearn:wine", "--model", "autoregressive", "--name", "w", "--model-store"]
    argv += [str(tmp_path), "--epochs", "2", "--no-progress", "--no-plots", "--onnx-exporter", "torchscript"]
    argv += ["--accept-weak-model", "--option", "learning_rate=0.003", "--option", "batch_size=64"]
    assert cli_main(argv) == 0
    record = load_manifest(tmp_path / "w" / "1").training["train_config"]
    assert (record["learning_rate"], record["batch_size"], record["epochs"]) == (0.003, 64, 2)
    assert cli_main([*argv[:-1], "batch_size=0"]) == 2
    assert "error: --option batch_size=0: must be at least 2" in capsys.readouterr().err


def test_the_family_default_learning_rate_is_recorded_unless_overridden(tmp_path: Path) -> None:
    """The autoregressive family trains at its own learning rate (not TrainConfig's 1e-3) when none is given."""
    argv = ["train", "--data", "sklearn:wine", "--model", "autoregressive", "--name", "d", "--model-store"]
    argv += [str(tmp_path), "--epochs", "2", "--no-progress", "--no-plots", "--onnx-exporter", "torchscript"]
    assert cli_main([*argv, "--accept-weak-model"]) == 0
    record = load_manifest(tmp_path / "d" / "1").training["train_config"]
    assert record["learning_rate"] == AUTOREGRESSIVE_LEARNING_RATE != TrainConfig().learning_rate
