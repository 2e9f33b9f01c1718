"""The `synthserve` console script routes subcommands without importing the other side."""

from __future__ import annotations

import subprocess
import sys

import pytest

from synthserve.cli import COMMANDS, main


def test_usage_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    err = capsys.readouterr().err
    assert all(name in err for name in COMMANDS)


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["frobnicate"]) == 2
    assert "usage: synthserve" in capsys.readouterr().err


def test_dispatcher_imports_neither_side() -> None:
    code = "import sys, synthserve.cli; print(sorted(m for m in ('training', 'serving', 'torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
