"""`buf lint` on the gRPC API in protos/, with the workspace configuration at the repository root."""

from __future__ import annotations

import subprocess

import yaml

from .tools import REPO, require_tool


def test_buf_workspace_covers_the_protos() -> None:
    config = yaml.safe_load((REPO / "buf.yaml").read_text())
    assert config["version"] == "v2"
    assert [module["path"] for module in config["modules"]] == ["protos"]
    assert list((REPO / "protos").rglob("*.proto")), "protos/ has no .proto file"


def test_buf_lint_passes() -> None:
    result = subprocess.run([require_tool("buf"), "lint"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
