"""benchmarks/torchserve_vs_synthserve.py runs end to end (both servers, one tiny load) and reports every cell."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.torchserve.support import SHIPPED_MODEL, SHIPPED_STORE, shipped_available

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "torchserve_vs_synthserve.py"


@pytest.mark.skipif(not shipped_available(), reason=f"model_store/{SHIPPED_MODEL}/1 not shipped yet")
def test_benchmark_smoke(tmp_path: Path) -> None:
    cells_file = tmp_path / "cells.json"
    command = [sys.executable, str(SCRIPT), "--model-store", str(SHIPPED_STORE), "--model", SHIPPED_MODEL]
    command += ["--version", "1", "--duration-s", "0.5", "--warmup-s", "0.2", "--concurrency", "2", "--rows", "1,10"]
    result = subprocess.run([*command, "--json", str(cells_file)], capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "same seed through both servers: bit-identical" in result.stdout or "equal within" in result.stdout
    cells = json.loads(cells_file.read_text())
    assert sorted((c["server"], c["rows_per_request"]) for c in cells) == [
        ("synthserve", 1),
        ("synthserve", 10),
        ("torchserve", 1),
        ("torchserve", 10),
    ]
    assert all(c["requests"] > 0 and c["p99_ms"] >= c["p50_ms"] > 0 for c in cells)
    assert "| 10 | 2 |" in result.stdout  # the side-by-side table
