"""The CLI: client subcommands against a real server, and `synthserve serve` stopping cleanly on SIGTERM."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO

import pandas as pd
import psutil
import pytest

from serving.cli import main
from tests.serving.conftest import ServerThread
from tests.serving.helpers import free_port


def test_models_prints_one_json_line_per_model(server: ServerThread, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--target", server.target]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [m["name"] for m in lines] == ["gauss", "gauss-gan"] and lines[0]["classes"] == ["neg", "pos"]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_sample_score_and_balance_write_files(server: ServerThread, tmp_path: Path, suffix: str) -> None:
    rows = tmp_path / f"rows{suffix}"
    assert (
        main(
            [
                "sample",
                "--target",
                server.target,
                "--model",
                "gauss",
                "--rows",
                "50",
                "--label",
                "neg",
                "--seed",
                "7",
                "-o",
                str(rows),
            ]
        )
        == 0
    )
    frame = pd.read_parquet(rows) if suffix == ".parquet" else pd.read_csv(rows)
    assert len(frame) == 50 and list(frame.columns) == ["x0", "x1", "cat", "y"]
    scores = tmp_path / f"scores{suffix}"
    assert (
        main(
            [
                "score",
                "--target",
                server.target,
                "--model",
                "gauss",
                "--input",
                str(rows),
                "--fpr",
                "0.01",
                "-o",
                str(scores),
            ]
        )
        == 0
    )
    scored = pd.read_parquet(scores) if suffix == ".parquet" else pd.read_csv(scores)
    assert len(scored) == 50 and "is_anomaly" in scored.columns
    balanced = tmp_path / f"balanced{suffix}"
    args = ["balance", "--target", server.target, "--model", "gauss", "--input", str(rows), "--label-column", "y"]
    assert main([*args, "--strategy", "explicit_counts", "--counts", "pos=4", "-o", str(balanced)]) == 0
    extra = pd.read_parquet(balanced) if suffix == ".parquet" else pd.read_csv(balanced)
    assert extra["y"].tolist() == ["pos"] * 4


def test_client_errors_print_the_code_and_exit_1(server: ServerThread, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sample", "--target", server.target, "--model", "nope", "--rows", "5"]) == 1
    assert "NOT_FOUND" in capsys.readouterr().err


def test_a_reader_that_stops_early_ends_the_output_quietly(server: ServerThread) -> None:
    """`synthserve sample ... | head -2`: the command stops with SIGPIPE's exit status and no traceback."""
    command = [sys.executable, "-m", "synthserve.cli", "sample", "--target", server.target, "--model", "gauss"]
    command += ["--rows", "200000", "--seed", "3"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    header, first = process.stdout.readline(), process.stdout.readline()
    process.stdout.close()
    returncode = process.wait(timeout=60)
    stderr = process.stderr.read().decode()
    assert header.startswith(b"x0,") and first.count(b",") == header.count(b",")
    assert returncode == 128 + signal.SIGPIPE
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr


def test_serve_runs_until_sigterm_and_stops_gracefully(store: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "synthserve.cli",
        "serve",
        "--model-store",
        str(store),
        "--port",
        "0",
        "--metrics-port",
        "-1",
    ]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        port = None
        for line in process.stderr:
            match = re.search(r"serving .* on 127\.0\.0\.1:(\d+)", line)
            if match:
                port = int(match.group(1))
                break
        assert port
        with_target = ["sample", "--target", f"127.0.0.1:{port}", "--model", "gauss", "--rows", "3", "--seed", "1"]
        assert main(with_target) == 0
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
        assert "stopped" in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()


def test_serve_with_two_workers_shares_the_port_and_stops_both(store: Path) -> None:
    process, port = _serve_two_workers(store)
    try:
        assert process.stderr is not None
        started = _lines_until(process.stderr, "serving.server INFO serving ", count=2)
        assert len({re.search(r" (\d+) serving\.server", line).group(1) for line in started}) == 2  # type: ignore[union-attr]
        assert main(["sample", "--target", f"127.0.0.1:{port}", "--model", "gauss", "--rows", "3"]) == 0
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        assert process.stderr.read().count("stopped") == 2
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # the session this test started: parent and workers


def test_workers_stop_when_their_parent_is_killed(store: Path) -> None:
    process, _ = _serve_two_workers(store)
    try:
        assert process.stderr is not None
        assert len(_lines_until(process.stderr, "serving.server INFO serving ", count=2)) == 2
        workers = [p for p in psutil.Process(process.pid).children() if p.is_running()]
        process.kill()
        process.wait(timeout=10)
        _, alive = psutil.wait_procs(workers, timeout=15)
        assert not alive
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def _serve_two_workers(store: Path) -> tuple[subprocess.Popen[str], int]:
    """`synthserve serve --workers 2` in its own process session (so the test can kill parent and workers)."""
    port = free_port()
    command = [sys.executable, "-m", "synthserve.cli", "serve", "--model-store", str(store), "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--metrics-port", "-1", "--workers", "2"], stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    return process, port


def _lines_until(stream: IO[str], marker: str, count: int) -> list[str]:
    found = []
    for line in stream:
        if marker in line:
            found.append(line)
            if len(found) == count:
                break
    return found


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--max-pending-rpcs", "0", "max_pending_rpcs must be >= 1, got 0"),
        ("--max-concurrent-rpcs", "-3", "max_concurrent_rpcs must be >= 1, got -3"),
        ("--max-batch-rows", "0", "max_batch_rows must be >= 1, got 0"),
        ("--balance-best-of", "0", "best_of must be in [1, 64], got 0"),
        ("--balance-temperature", "9", "temperature must be in (0, 4.0], got 9.0"),
    ],
)
def test_serve_refuses_bad_limits_naming_them(
    store: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str, message: str
) -> None:
    assert main(["serve", "--model-store", str(store), "--port", "0", flag, value]) == 2
    assert message in capsys.readouterr().err


def test_sample_passes_sampling_options_and_reports_them(
    server: ServerThread, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["sample", "--target", server.target, "--model", "gauss", "--rows", "5", "--label", "pos", "--seed", "1"]
    assert main([*argv, "--temperature", "0.5", "--best-of", "3"]) == 0
    captured = capsys.readouterr()
    assert "seed 1, version 2, temperature 0.5, best_of 3" in captured.err
    assert len(captured.out.strip().splitlines()) == 6  # header + 5 rows
    assert main([*argv, "--best-of", "99"]) == 1
    assert "INVALID_ARGUMENT: sampling.best_of must be in [1, 64], got 99" in capsys.readouterr().err
