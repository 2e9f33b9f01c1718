"""The serving benchmark end to end on one shipped model, with short phases: every section prints its figures,
and the figures are consistent (positive rates, ratios that are the quotients of the printed rates)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODEL = "breast-cancer-gan"


def _numbers(line: str) -> list[float]:
    return [float(v.replace(",", "")) for v in re.findall(r"-?\d[\d,]*\.?\d*", line)]


def test_serving_benchmark_prints_every_section() -> None:
    command = [sys.executable, str(ROOT / "benchmarks" / "serving.py"), "--model-store", str(ROOT / "model_store")]
    command += ["--models", MODEL, "--duration-s", "0.3", "--clients", "8"]
    command += ["--stream-model", MODEL, "--stream-rows", "20000"]
    out = subprocess.run(command, capture_output=True, text=True, timeout=600, check=True).stdout
    lines = [line for line in out.splitlines() if line.startswith(MODEL)]
    assert len(lines) == 4, out  # (1), (2), (3), (2b): one line each
    efficiency, small, idle, on_off = (_numbers(line.removeprefix(MODEL)) for line in lines)
    served, local, ratio = efficiency
    assert served > 0 and local > 0 and abs(ratio - served / local) < 0.01
    check = re.search(r"health Check, 8 clients: ([\d,]+) req/s", out)
    assert check is not None, out
    check_rps = float(check.group(1).replace(",", ""))
    rps, of_check, p50_ms, p99_ms = small[:4]
    assert rps > 0 and abs(of_check - rps / check_rps) < 0.01 and 0 < p50_ms <= p99_ms
    assert 0 < idle[-1] < 1000  # p50 in ms
    on, off, gain = on_off
    assert on == rps and off > 0 and abs(gain - on / off) < 0.01
    stream = next(line for line in out.splitlines() if line.startswith("(4) one SampleStream of 20,000 rows"))
    assert _numbers(stream.split(":", 1)[1])[0] > 0  # rows/s
