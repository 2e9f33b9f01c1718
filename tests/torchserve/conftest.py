"""Session fixtures: a tiny model store with known values, and one real TorchServe 0.12 serving archives of it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.torchserve.support import SHIPPED_MODEL, SHIPPED_STORE, shipped_available
from tests.torchserve.tiny_models import TINY_MODELS, write_tiny_model
from torchserve_handler.archive import ArchiveConfig, build_archive
from torchserve_handler.local import LocalTorchServe, TorchServeConfig


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("model_store")
    for model in TINY_MODELS:
        write_tiny_model(store, model)
    return store


@pytest.fixture(scope="session")
def torchserve(tiny_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTorchServe]:
    """One real TorchServe 0.12 for the session, serving the tiny models and, once shipped, breast-cancer-flow."""
    root = tmp_path_factory.mktemp("torchserve")
    mar_store = root / "mars"
    archives = [ArchiveConfig(tiny_store, model.name, mar_store, workers=1) for model in TINY_MODELS]
    if shipped_available():
        archives.append(ArchiveConfig(SHIPPED_STORE, SHIPPED_MODEL, mar_store, version=1, workers=1))
    for archive in archives:
        build_archive(archive)
    with LocalTorchServe(TorchServeConfig(model_store=mar_store, workdir=root / "run")) as server:
        yield server
