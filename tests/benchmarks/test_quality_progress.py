"""A quality run that stops and goes on (`--resume`): what it keeps, what it refuses, and the time it reports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import benchmarks.quality as quality
from benchmarks.quality_lib.progress import PARTIAL_FILE, RUN_FILE, Progress, ResumeError, read_records

SETTINGS = {"split": "raw5", "folds": ["a:0", "a:1"], "families": ["flow"], "seed": 0}
COMMIT = "0123abc"


def _stopped_run(out: Path) -> None:
    """What a run leaves when stopped after its first fold."""
    progress = Progress.start(out, SETTINGS, COMMIT, resume=False)
    records = pd.DataFrame(
        [
            {"dataset": "a", "fold": 0, "method": "knn", "classifier": "", "metric": "anomaly_auroc", "value": 0.75},
            {"dataset": "a", "fold": 0, "method": "flow", "classifier": "", "metric": "error", "value": np.nan},
        ]
    )
    records.to_csv(out / PARTIAL_FILE, index=False)
    progress.save(wall_s=100.0, cpu_s=150.0, folds=1)


def test_a_stopped_run_resumes_with_its_records_and_time(tmp_path: Path) -> None:
    _stopped_run(tmp_path)
    progress = Progress.start(tmp_path, SETTINGS, COMMIT, resume=True)
    assert progress.finished_folds() == {("a", 0)}
    assert progress.records is not None
    assert progress.records["classifier"].tolist() == ["", ""]  # empty text stays text, not NaN
    assert progress.records["value"].iloc[0] == 0.75 and np.isnan(progress.records["value"].iloc[1])
    progress.save(wall_s=40.0, cpu_s=60.0, folds=1)
    progress.save(wall_s=50.0, cpu_s=70.0, folds=2)  # the same sitting, later
    assert progress.totals() == (150.0, 220.0, 2)
    sittings = json.loads((tmp_path / RUN_FILE).read_text())["sittings"]
    assert [s["folds"] for s in sittings] == [1, 2]


def test_a_stopped_run_is_not_overwritten_without_resume(tmp_path: Path) -> None:
    _stopped_run(tmp_path)
    with pytest.raises(ResumeError, match="--resume"):
        Progress.start(tmp_path, SETTINGS, COMMIT, resume=False)


@pytest.mark.parametrize(
    ("settings", "commit", "message"),
    [
        ({**SETTINGS, "split": "keel"}, COMMIT, "split: 'raw5' then, 'keel' now"),
        ({**SETTINGS, "families": ["flow", "vae"]}, COMMIT, "families"),
        (SETTINGS, "4567def", "ran code 0123abc, this is 4567def"),
        (SETTINGS, f"{COMMIT}+changes", "clean checkout"),
        (SETTINGS, None, "clean checkout"),
    ],
)
def test_resume_refuses_other_settings_or_code(
    tmp_path: Path, settings: dict[str, object], commit: str | None, message: str
) -> None:
    _stopped_run(tmp_path)
    with pytest.raises(ResumeError, match=message.replace("+", r"\+")):
        Progress.start(tmp_path, settings, commit, resume=True)


def test_resume_without_run_file_says_what_is_missing(tmp_path: Path) -> None:
    _stopped_run(tmp_path)
    (tmp_path / RUN_FILE).unlink()
    with pytest.raises(ResumeError, match=f"{RUN_FILE} is missing"):
        Progress.start(tmp_path, SETTINGS, COMMIT, resume=True)


def test_the_command_resumes_to_the_same_figures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The baselines of --quick run whole, then again stopped after one fold and resumed: same records."""
    monkeypatch.setattr(quality, "code_commit", lambda root: COMMIT)
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    argv = ["--quick", "--families", "none", "--jobs", "1"]
    assert quality.main([*argv, "--out", str(whole)]) == 0
    records = read_records(whole / "records.csv")
    assert len(records.groupby(["dataset", "fold"])) == 3
    # A run stopped after its first fold: that fold's records and the run file of its one sitting.
    resumed.mkdir()
    first = records[records["dataset"] == records["dataset"].iloc[0]]
    first.to_csv(resumed / PARTIAL_FILE, index=False)
    run = json.loads((whole / RUN_FILE).read_text())
    run["sittings"] = [{**run["sittings"][0], "wall_s": 1000.0, "folds": 1}]
    (resumed / RUN_FILE).write_text(json.dumps(run))
    with pytest.raises(SystemExit, match="--resume"):
        quality.main([*argv, "--out", str(resumed)])
    assert quality.main([*argv, "--out", str(resumed), "--resume"]) == 0
    key = ["dataset", "fold", "method", "classifier", "metric"]

    def figures(frame: pd.DataFrame) -> pd.DataFrame:  # all but the seconds, which differ from run to run
        return frame[frame["metric"] != "fit_s"].sort_values(key).reset_index(drop=True)

    again = read_records(resumed / "records.csv")
    assert len(again) == len(records)
    pd.testing.assert_frame_equal(figures(again), figures(records))
    assert not (resumed / PARTIAL_FILE).exists()
    header = (resumed / "results.md").read_text()
    assert "in 2 sittings (`--resume`)" in header
    wall_s = float(header.split("wall time ")[1].split(" s")[0])
    assert wall_s > 1000.0  # the earlier sitting's time is counted
