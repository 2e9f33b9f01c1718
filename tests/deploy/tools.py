"""Finds the external tools the deployment tests drive; `tools/install-test-tools.sh` installs them."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

__all__ = ["REPO", "require_tool"]

REPO = Path(__file__).resolve().parents[2]
_SEARCH_DIRS = (REPO / ".tools" / "bin", Path(sys.executable).parent)


def require_tool(name: str) -> str:
    """Path of `name` from .tools/bin, the virtualenv or PATH.

    A machine without it skips with the reason; in CI (CI=true) it fails, since `make test` installs every tool.
    """
    for directory in _SEARCH_DIRS:
        candidate = directory / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found is not None:
        return found
    reason = f"{name} not found in .tools/bin, the virtualenv or PATH: run tools/install-test-tools.sh"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)
