"""The graph benchmark end to end on a shipped model: it times every graph, and side by side against a baseline
store (here the same store) the speed-up is close to 1."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_graph_benchmark_times_every_graph_side_by_side() -> None:
    store = ROOT / "model_store"
    command = [sys.executable, str(ROOT / "benchmarks" / "graphs.py"), "--model-store", str(store)]
    command += [
        "--baseline-store",
        str(store),
        "--models",
        "breast-cancer-flow",
        "--batch-rows",
        "256",
        "--min-s",
        "0.05",
    ]
    out = subprocess.run(command, capture_output=True, text=True, timeout=300, check=True).stdout
    rows = {line.split()[1]: line.split() for line in out.splitlines() if line.startswith("breast-cancer-flow")}
    assert set(rows) == {"sample", "log_prob", "encode", "balance"}, out
    for fields in rows.values():
        rate, one_row_us, base_rate = (float(re.sub(",", "", v)) for v in fields[2:5])
        assert rate > 0 and one_row_us > 0 and base_rate > 0
        assert 0.2 < float(fields[-1].rstrip("x")) < 5.0  # the same graphs: any gap is the machine's noise
