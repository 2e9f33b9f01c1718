"""Bulk generation: partitions written by separate workers (Indexed Job indices, or --all here) concatenate to one
SampleStream of the same request, bit for bit; retries skip finished partitions; bad input is refused up front."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from serving.bulk import BulkRequest, OtherRequestError, partition_path, run_partitions, write_partition
from serving.cli import main
from serving.client import SynthClient
from tests.serving.conftest import ServerThread

REQUEST = BulkRequest(
    model="gauss", version=2, num_rows=5_000, seed=17, partition_rows=2_048, chunk_rows=512, proportions=(("pos", 1.0),)
)


@pytest.fixture()
def client(server: ServerThread) -> Iterator[SynthClient]:
    with SynthClient(server.target, timeout_s=30) as client:
        yield client


def _stream(client: SynthClient, request: BulkRequest) -> pd.DataFrame:
    frames = client.sample_stream(
        request.model,
        request.num_rows,
        proportions=dict(request.proportions or ()),
        label=request.label,
        seed=request.seed,
        version=request.version,
        chunk_rows=request.chunk_rows,
    )
    return pd.concat(list(frames), ignore_index=True)


def _read(paths: list[Path]) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)


def test_partitions_from_separate_workers_concatenate_to_one_stream(client: SynthClient, tmp_path: Path) -> None:
    assert REQUEST.partitions == 3 and REQUEST.rows(2) == (4_096, 5_000)
    # Written out of order, as an Indexed Job's pods may finish.
    paths = [write_partition(client, REQUEST, index, tmp_path) for index in (2, 0, 1)]
    assert [p.name for p in paths] == [
        "part-00002-of-00003.parquet",
        "part-00000-of-00003.parquet",
        "part-00001-of-00003.parquet",
    ]
    ordered = sorted(tmp_path.glob("part-*.parquet"))
    assert [len(pd.read_parquet(p)) for p in ordered] == [2_048, 2_048, 904]
    pd.testing.assert_frame_equal(_read(ordered), _stream(client, REQUEST), check_exact=True)
    described = json.loads((tmp_path / "_request.json").read_text())
    assert described["seed"] == 17 and described["partitions"] == 3 and described["proportions"] == {"pos": 1.0}


def test_a_retried_partition_is_skipped_and_a_failed_one_leaves_no_file(client: SynthClient, tmp_path: Path) -> None:
    path = write_partition(client, REQUEST, 1, tmp_path)
    written = path.stat().st_mtime_ns
    assert write_partition(client, REQUEST, 1, tmp_path) == path and path.stat().st_mtime_ns == written
    missing = BulkRequest(model="gauss", version=7, num_rows=10, seed=1, partition_rows=512, chunk_rows=512)
    with pytest.raises(Exception, match="version 7"):
        write_partition(client, missing, 0, tmp_path / "missing")
    assert not partition_path(tmp_path / "missing", missing, 0).exists()
    assert not list((tmp_path / "missing").glob(".*.tmp"))


def test_partitions_of_another_request_are_never_taken_for_this_ones(
    client: SynthClient, tmp_path: Path, server: ServerThread, capsys: pytest.CaptureFixture[str]
) -> None:
    write_partition(client, REQUEST, 0, tmp_path)
    other = dataclasses.replace(REQUEST, seed=18)
    with pytest.raises(OtherRequestError, match="holds partitions of another request"):
        write_partition(client, other, 0, tmp_path)
    argv = ["bulk", "--target", server.target, "--model", "gauss", "--version", "2", "--rows", "5000", "--seed", "19"]
    assert main([*argv, "--partition-rows", "2048", "--out", str(tmp_path), "--index", "0"]) == 2
    assert "holds partitions of another request" in capsys.readouterr().err


def test_the_local_runner_writes_every_partition_with_several_workers(client: SynthClient, tmp_path: Path) -> None:
    paths = run_partitions(client, REQUEST, range(REQUEST.partitions), tmp_path, workers=3)
    pd.testing.assert_frame_equal(_read(paths), _stream(client, REQUEST), check_exact=True)


def test_the_cli_writes_the_job_index_or_every_partition(server: ServerThread, tmp_path: Path) -> None:
    argv = ["bulk", "--target", server.target, "--model", "gauss", "--version", "1", "--rows", "3000", "--seed", "5"]
    argv += ["--partition-rows", "1024", "--chunk-rows", "256", "--label", "neg"]
    one = tmp_path / "one"
    assert main([*argv, "--out", str(one), "--index", "2"]) == 0
    assert [p.name for p in one.glob("part-*")] == ["part-00002-of-00003.parquet"]
    every = tmp_path / "every"
    assert main([*argv, "--out", str(every), "--all", "--workers", "2"]) == 0
    frames = _read(sorted(every.glob("part-*.parquet")))
    assert len(frames) == 3_000 and set(frames["y"]) == {"neg"}
    pd.testing.assert_frame_equal(
        pd.read_parquet(one / "part-00002-of-00003.parquet"), frames.iloc[2048:].reset_index(drop=True)
    )


@pytest.mark.parametrize(
    ("extra", "environ", "message"),
    [
        ([], {}, "--index: give a partition index, --all, or run as an Indexed Job ($JOB_COMPLETION_INDEX)"),
        ([], {"JOB_COMPLETION_INDEX": "x"}, "$JOB_COMPLETION_INDEX: expected a whole number, got 'x'"),
        (["--index", "3"], {}, "partition index 3 outside [0, 3) for this request"),
        (
            ["--index", "0", "--chunk-rows", "1000"],
            {},
            "partition_rows (1024) must be a positive multiple of chunk_rows (1000)",
        ),
        (["--all", "--version", "0"], {}, "version must be >= 1"),
        (["--all", "--label", "pos", "--proportions", "pos=1"], {}, "label and proportions: give one or the other"),
        (["--all", "--workers", "0"], {}, "--workers must be >= 1, got 0"),
        (["--all", "--rows", "200000", "--partition-rows", "1"], {}, "= 200000 partitions, more than 99999"),
    ],
)
def test_bad_bulk_input_is_refused_before_connecting(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    environ: dict[str, str],
    message: str,
) -> None:
    monkeypatch.delenv("JOB_COMPLETION_INDEX", raising=False)
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    argv = ["bulk", "--target", "127.0.0.1:1", "--model", "gauss", "--version", "1", "--rows", "3000", "--seed", "5"]
    argv += ["--partition-rows", "1024", "--out", str(tmp_path / "out"), *extra]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
