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

from serving.cli import build_parser, main
from serving.cli_serve import server_config
from serving.config import BatcherConfig
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
        ("--inline-max-ms", "-1", "inline_max_s must be >= 0, got -0.001"),
    ],
)
def test_serve_refuses_bad_limits_naming_them(
    store: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str, message: str
) -> None:
    assert main(["serve", "--model-store", str(store), "--port", "0", flag, value]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "early_dispatch", "inline_max_s"),
    [([], True, BatcherConfig.inline_max_s), (["--no-early-dispatch", "--inline-max-ms", "0"], False, 0.0)],
)
def test_serve_flags_set_the_batchers_early_dispatch_and_inline_runs(
    store: Path, flags: list[str], early_dispatch: bool, inline_max_s: float
) -> None:
    args = build_parser().parse_args(["serve", "--model-store", str(store), *flags])
    batcher = server_config(args, {}).batcher
    assert (batcher.early_dispatch, batcher.inline_max_s) == (early_dispatch, pytest.approx(inline_max_s))


def test_sample_passes_sampling_options_and_reports_them(
    server: ServerThread, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["sample", "--target", server.target, "--model", "gauss", "--rows", "5", "--label", "pos", "--seed", "1"]
    assert main([*argv, "--temperature", "0.5", "--best-of", "3"]) == 0
    captured = capsys.readouterr()
    assert "seed 1, version 2, temperature 0.5, best_of 3, guidance 1" in captured.err
    assert len(captured.out.strip().splitlines()) == 6  # header + 5 rows
    assert main([*argv, "--best-of", "99"]) == 1
    assert "INVALID_ARGUMENT: sampling.best_of must be in [1, 64], got 99" in capsys.readouterr().err
    assert main([*argv, "--guidance", "2"]) == 1
    assert "FAILED_PRECONDITION: sampling.guidance 2: model 'gauss' (flow)" in capsys.readouterr().err


# Bad input: one stderr line that names the field, exit status 2, no traceback and nothing sent to the server.


@pytest.fixture()
def rows_csv(tmp_path: Path) -> Path:
    """Rows as `gauss` reads them: x0, x1, cat (a | b | c) and the label y (neg | pos)."""
    path = tmp_path / "rows.csv"
    frame = pd.DataFrame({"x0": [0.1, 2.9, 0.3], "x1": [0.0, -2.1, 0.2], "cat": ["a", "b", "c"]})
    frame.assign(y=["neg", "pos", "neg"]).to_csv(path, index=False)
    return path


def _refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Runs the CLI on bad input; returns its one stderr line after checking the exit status and the output."""
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    assert captured.out == ""
    return lines[0]


def test_score_of_a_missing_input_file_names_it(
    server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.csv"
    line = _refused(["score", "--target", server.target, "--model", "gauss", "--input", str(missing)], capsys)
    assert line == f"synthserve score: --input {missing}: no such file"


def test_balance_with_a_misspelt_label_column_offers_the_close_match(
    server: ServerThread, rows_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["balance", "--target", server.target, "--model", "gauss", "--input", str(rows_csv), "--label-column", "Y"]
    line = _refused(argv, capsys)
    assert line == f"synthserve balance: --label-column 'Y': no such column in {rows_csv} (did you mean 'y'?)"


def test_score_with_an_unknown_category_names_the_column(
    server: ServerThread, rows_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    unknown = rows_csv.with_name("unknown.csv")
    pd.read_csv(rows_csv).assign(cat=["a", "zebra", "c"]).to_csv(unknown, index=False)
    line = _refused(["score", "--target", server.target, "--model", "gauss", "--input", str(unknown)], capsys)
    assert line.startswith(f"synthserve score: --input {unknown}: column 'cat'") and "zebra" in line


@pytest.mark.parametrize("command", ["score", "encode"])
def test_a_misspelt_input_column_offers_the_close_match(
    server: ServerThread, rows_csv: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    renamed = rows_csv.with_name("renamed.csv")
    pd.read_csv(rows_csv).rename(columns={"x1": "X1"}).to_csv(renamed, index=False)
    line = _refused([command, "--target", server.target, "--model", "gauss", "--input", str(renamed)], capsys)
    assert line == f"synthserve {command}: --input {renamed}: no column 'x1' (did you mean 'X1'?)"


@pytest.mark.parametrize("command", ["sample", "score"])
def test_an_unsupported_output_type_is_refused_before_any_work(
    server: ServerThread, rows_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    output = tmp_path / "x.xlsx"
    what = ["--rows", "5"] if command == "sample" else ["--input", str(rows_csv)]
    line = _refused([command, "--target", server.target, "--model", "gauss", *what, "-o", str(output)], capsys)
    assert line == f"synthserve {command}: --output {output}: unsupported file type '.xlsx' (use .csv or .parquet)"
    assert not output.exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--rows", "0"], "--rows must be >= 1, got 0"),
        (["--rows", "5", "--proportions", "neg"], "--proportions: expected LABEL=WEIGHT (a number),..., got 'neg'"),
        (["--rows", "5", "--proportions", "neg=1", "--label", "pos"], "--label and --proportions: give one"),
        (["--rows", "5", "--tls-ca", "nope.pem"], "--tls-ca nope.pem: no such file"),
        (["--rows", "5", "--tls-key", "client.key"], "--tls-cert and --tls-key: give both (mutual TLS) or neither"),
        (
            ["--rows", "5", "-o", "/no/such/directory/rows.csv"],
            "--output /no/such/directory/rows.csv: no such directory",
        ),
    ],
)
def test_bad_sample_arguments_are_one_line(
    server: ServerThread, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    line = _refused(["sample", "--target", server.target, "--model", "gauss", *extra], capsys)
    assert line.startswith(f"synthserve sample: {message}")


def test_bad_balance_counts_and_unreadable_input_are_one_line(
    server: ServerThread, rows_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["balance", "--target", server.target, "--model", "gauss", "--label-column", "y"]
    line = _refused([*argv, "--input", str(rows_csv), "--strategy", "explicit_counts", "--counts", "pos=many"], capsys)
    assert line == "synthserve balance: --counts: expected LABEL=ROWS (a whole number),..., got 'pos=many'"
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("x0,x1\n1,2\n1,2,3,4\n")
    line = _refused([*argv, "--input", str(ragged)], capsys)
    assert line.startswith(f"synthserve balance: --input {ragged}: cannot read it as CSV (")
    sheet = tmp_path / "rows.xlsx"
    sheet.write_bytes(b"PK")
    line = _refused([*argv, "--input", str(sheet)], capsys)
    assert line == f"synthserve balance: --input {sheet}: unsupported file type '.xlsx' (use .csv or .parquet)"


def test_serve_with_a_missing_store_or_certificate_is_one_line(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = _refused(["serve", "--model-store", str(tmp_path / "nope"), "--port", "0"], capsys)
    assert line == f"synthserve serve: --model-store {tmp_path / 'nope'}: no such directory"
    argv = ["serve", "--model-store", str(store), "--port", "0", "--tls-cert", "srv.pem", "--tls-key", "srv.key"]
    assert _refused(argv, capsys) == "synthserve serve: --tls-cert srv.pem: no such file"


def test_bad_input_through_the_console_script_has_no_traceback(server: ServerThread, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "synthserve.cli", "score", "--target", server.target, "--model", "gauss"]
    result = subprocess.run([*command, "--input", str(tmp_path / "nope.csv")], capture_output=True, text=True)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [f"synthserve score: --input {tmp_path / 'nope.csv'}: no such file"]


# Large outputs: streamed to the file as chunks arrive, the same rows as one unary Sample.


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_sample_streams_to_the_output_the_rows_of_a_unary_sample(
    server: ServerThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str
) -> None:
    import pyarrow.parquet as pq

    from serving import cli_files
    from serving.client import SynthClient

    monkeypatch.setattr(cli_files, "PARQUET_ROW_GROUP_ROWS", 1000)  # 5,000 rows in chunks of 300: 5 row groups
    output = tmp_path / f"rows{suffix}"
    argv = ["sample", "--target", server.target, "--model", "gauss", "--rows", "5000", "--seed", "11"]
    assert main([*argv, "--chunk-rows", "300", "-o", str(output)]) == 0
    with SynthClient(server.target) as client:
        unary = client.sample("gauss", 5000, seed=11)
    if suffix == ".parquet":
        streamed = pd.read_parquet(output)
        assert pq.ParquetFile(output).metadata.num_row_groups == 5
        pd.testing.assert_frame_equal(streamed, unary, check_exact=False, rtol=1e-6)
    else:
        streamed = pd.read_csv(output)  # CSV holds 9 significant digits: float32 values round-trip
        pd.testing.assert_frame_equal(streamed, unary, check_exact=False, rtol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == [output.name]  # the temporary file was renamed


def test_a_failed_sample_leaves_no_output_file(
    server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "rows.parquet"
    argv = ["sample", "--target", server.target, "--model", "gauss", "--rows", "50", "--best-of", "99"]
    assert main([*argv, "-o", str(output)]) == 1
    assert "INVALID_ARGUMENT" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_client_tls_takes_str_paths(tmp_path: Path) -> None:
    from serving.tls import ClientTls

    ca = tmp_path / "ca.pem"
    ca.write_bytes(b"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
    tls = ClientTls(ca_file=str(ca))
    assert tls.ca_file == ca and tls.credentials() is not None
    with pytest.raises(ValueError, match=r"tls\.ca_file: cannot read .*nope\.pem"):
        ClientTls(ca_file=str(tmp_path / "nope.pem")).credentials()


def test_where_keeps_the_rows_that_meet_every_condition(
    server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "rows.csv"
    argv = ["sample", "--target", server.target, "--model", "gauss", "--rows", "60", "--seed", "2", "--label", "pos"]
    assert main([*argv, "--where", "cat=b", "--where", "x0=19.5..20.5", "-o", str(out)]) == 0
    frame = pd.read_csv(out)
    assert len(frame) == 60 and set(frame["cat"]) == {"b"} and frame["x0"].between(19.5, 20.5).all()
    assert main([*argv, "--where", "x0=high"]) == 1
    assert (
        "INVALID_ARGUMENT: conditions[0].equals: equality applies to categorical and integer" in capsys.readouterr().err
    )
    assert main([*argv, "--where", "x0=1..b"]) == 2
    assert "--where 'x0=1..b': LOW..HIGH must be two numbers" in capsys.readouterr().err
    assert main([*argv, "--where", "x0"]) == 2
    assert "--where 'x0': expected COLUMN=VALUE or COLUMN=LOW..HIGH" in capsys.readouterr().err
    table = tmp_path / "input.csv"
    pd.DataFrame({"x0": [0.0] * 6, "x1": [0.0] * 6, "cat": ["a"] * 6, "y": ["neg"] * 5 + ["pos"]}).to_csv(
        table, index=False
    )
    balanced = tmp_path / "balanced.csv"
    balance = ["balance", "--target", server.target, "--model", "gauss", "--input", str(table), "--label-column", "y"]
    assert main([*balance, "--seed", "1", "--where", "cat=c", "-o", str(balanced)]) == 0
    extra = pd.read_csv(balanced)
    assert len(extra) == 4 and set(extra["cat"]) == {"c"} and set(extra["y"]) == {"pos"}
