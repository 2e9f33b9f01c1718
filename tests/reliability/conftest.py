"""Fixtures: the closed-form model store (tests/serving/fixture_store.py) and in-process servers on port 0
(`server`, `stub`: the serving tests' own fixtures)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.serving.conftest import server, stub  # noqa: F401 (fixtures shared with tests/serving)
from tests.serving.fixture_store import write_store


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_store(tmp_path_factory.mktemp("reliability_store"))
