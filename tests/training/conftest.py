"""Shared fixtures: a small mixed-type CSV and one tiny trained model per family (trained once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.training.mixed_data import FAMILIES, make_mixed_frame
from training.cli import main as cli_main


@pytest.fixture(scope="session")
def mixed_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "mixed.csv"
    make_mixed_frame().to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def trained_store(tmp_path_factory: pytest.TempPathFactory, mixed_csv: Path) -> Path:
    """One version of each family trained through the CLI on the mixed CSV (few epochs)."""
    store = tmp_path_factory.mktemp("store")
    for family in FAMILIES:
        argv = ["train", "--data", str(mixed_csv), "--model", family, "--name", f"mixed-{family}"]
        argv += ["--label", "outcome", "--model-store", str(store), "--epochs", "8", "--threads", "1", "--no-progress"]
        if family == "gan":  # 8 epochs leave a GAN barely trained: the quality gate would refuse it
            argv.append("--accept-weak-model")
        assert cli_main(argv) == 0
    return store
