"""The fidelity benchmark and the KEEL failure sweep: their pieces on known inputs, then each command end to end on
one small table (that it runs and reports every figure, not that the figures meet the issue's targets)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks.fidelity import _family
from benchmarks.fidelity_lib.measures import Encoding, invented_share, outside_share, read_frame
from benchmarks.fidelity_lib.report import target_verdicts, verdict_lines
from benchmarks.fidelity_lib.tables import float_written, load_table, read_keel_raw, split_rows, write_forms

REPO = Path(__file__).resolve().parents[2]
SDV_PYTHON = REPO / ".venv-sdv" / "bin" / "python"
# haberman, 1 family, 2 epochs, no SDV: two `train_and_publish` calls of a few seconds each.
FIDELITY_TIMEOUT_S = 60
# 1 data set x 1 fold x 1 family x 2 forms, 1 epoch, in a spawned worker (~5 s of imports), then a second call.
KEEL_RUNS_TIMEOUT_S = 90


# --- tables --------------------------------------------------------------------------------------------------------


def test_raw_keel_keeps_units_and_categories_and_reads_null_as_a_gap() -> None:
    frame = read_keel_raw("cleveland-0_vs_4")
    assert list(frame.columns[-2:]) == ["A13", "Class"]
    assert set(frame["Class"]) == {"negative", "positive"}  # stripped of the file's leading blanks
    assert all(pd.api.types.is_numeric_dtype(frame[c]) for c in frame.columns[:-1])
    assert frame.isna().sum().sum() == 4  # `<null>`
    assert frame.iloc[0, :5].tolist() == [63, 1, 1, 145, 233]  # original units, not codes
    abalone = read_keel_raw("abalone19")
    assert set(abalone["A1"]) == {"F", "I", "M"} and abalone["A2"].dtype == np.float64


def test_float_form_writes_every_number_as_a_float_and_keeps_strings(tmp_path: Path) -> None:
    frame = pd.DataFrame({"n": [1, 2], "x": [0.5, np.nan], "s": ["2", "5more"], "target": [0, 1]})
    written = float_written(frame)
    written.to_csv(tmp_path / "f.csv", index=False)
    assert (tmp_path / "f.csv").read_text().splitlines()[1:] == ["1.0,0.5,2,0.0", "2.0,,5more,1.0"]
    assert frame["n"].dtype == np.int64  # the original is left alone


def test_both_forms_share_one_stratified_split(tmp_path: Path) -> None:
    table = load_table("wine")
    train, test = split_rows(table)
    assert len(train) + len(test) == len(table.frame) and not set(train) & set(test)
    shares = table.frame[table.label].iloc[train].value_counts(normalize=True)
    np.testing.assert_allclose(
        shares.sort_index(), table.frame[table.label].value_counts(normalize=True).sort_index(), atol=0.02
    )
    paths = write_forms(table, tmp_path)
    original, floats = read_frame(paths["original"]), read_frame(paths["float"])
    assert original["target"].dtype == np.int64 and floats["target"].dtype == np.float64
    np.testing.assert_array_equal(original.to_numpy(dtype=float), floats.to_numpy(dtype=float))


# --- measures ------------------------------------------------------------------------------------------------------


def test_encoding_one_hot_with_a_column_for_unseen_levels_numbers_as_they_are() -> None:
    real = pd.DataFrame({"x": [1.0, np.nan, 3.0], "c": ["a", "b", "a"], "d": ["2026-01-01", "2026-01-02", None]})
    encoding = Encoding.fit(real)
    assert encoding.numeric == ("x",) and encoding.datetime == ("d",) and encoding.levels == {"c": ("a", "b")}
    generated = pd.DataFrame({"x": [2.0, np.nan], "c": ["z", None], "d": ["2026-01-02", None]})
    x = encoding(generated)
    np.testing.assert_array_equal(x[:, 0], [2.0, np.nan])
    assert x[0, 1] - encoding(real)[0, 1] == 86400.0  # datetimes as seconds
    np.testing.assert_array_equal(x[:, 2:], [[0, 0, 1], [0, 0, 0]])  # unseen level: its own column; a gap: zeros
    assert encoding(generated.drop(columns="x")).shape == x.shape  # a column left out reads as gaps


def test_outside_range_and_invented_categories_are_shares_of_present_generated_values() -> None:
    real = pd.DataFrame({"x": [0.0, 10.0], "n": [1, 5], "c": ["a", "b"]})
    generated = pd.DataFrame({"x": [-1.0, 5.0, np.nan, 10.0], "n": [1, 6, 5, 5], "c": ["a", "a", "new", None]})
    encoding = Encoding.fit(real)
    assert outside_share(real, generated, encoding) == pytest.approx(2 / 7)
    assert invented_share(generated, encoding) == pytest.approx(1 / 3)
    numeric_only = Encoding.fit(real[["x"]])
    assert invented_share(generated, numeric_only) is None


def _record(table: str, form: str, generator: str, auc: float, fit_s: float = 1.0) -> dict[str, object]:
    return {
        "table": table,
        "form": form,
        "generator": generator,
        "train_rows": 100,
        "error": None,
        "two_sample_auc": auc,
        "outside_share": 0.0,
        "invented_share": None,
        "fit_seconds": fit_s,
        "fit_cpu_seconds": fit_s,
        "call_seconds": None,
    }


def test_verdicts_check_each_target_and_pick_the_family_meeting_most() -> None:
    records = [
        _record("t1", "original", "flow", 0.70),
        _record("t2", "original", "flow", 0.96),  # one table above 0.95
        _record("t1", "float", "flow", 0.60),
        _record("t1", "original", "vae", 0.74),
        _record("t2", "original", "vae", 0.70),
        _record("t1", "float", "vae", 0.64, fit_s=5.0),  # slower than TVAE here
        _record("t1", "float", "tvae", 0.9, fit_s=2.0),
    ]
    verdicts = target_verdicts(records, ["flow", "vae"])
    flow, vae = verdicts["families"]
    assert flow["checks"]["max_auc_original"] is False and flow["max_auc_original_table"] == "t2"
    assert vae["checks"]["mean_auc_original"] and vae["checks"]["mean_auc_float"]
    assert vae["fit_at_most_tvae"] == 0 and vae["checks"]["fit_at_most_tvae"] is False
    assert verdicts["best"] == "vae"
    assert verdict_lines(verdicts)[0].startswith("vae (best synthserve family)")
    without_float = target_verdicts([r for r in records if r["form"] == "original"], ["vae"])
    assert without_float["families"][0]["checks"]["mean_auc_float"] is None  # not run: neither pass nor fail


@pytest.mark.skipif(not SDV_PYTHON.exists(), reason="SDV's environment (.venv-sdv, made by fidelity.py) is absent")
def test_sdv_worker_fits_and_writes_as_many_rows(tmp_path: Path) -> None:
    pd.DataFrame({"x": np.arange(40) / 4, "c": ["a", "b"] * 20}).to_csv(tmp_path / "t.csv", index=False)
    command = [str(SDV_PYTHON), str(REPO / "benchmarks" / "fidelity_lib" / "sdv_worker.py"), "--train"]
    command += [str(tmp_path / "t.csv"), "--synthesizer", "gaussian_copula", "--rows", "25"]
    command += ["--output", str(tmp_path / "s.csv")]
    out = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    report = json.loads(out.stdout.splitlines()[-1])
    assert report["sdv_version"].startswith("2.") and report["fit_seconds"] >= 0
    assert list(pd.read_csv(tmp_path / "s.csv").shape) == [25, 2]


# --- the commands --------------------------------------------------------------------------------------------------


def test_fidelity_runs_one_table_and_reports_every_figure(tmp_path: Path) -> None:
    output = tmp_path / "results.json"
    command = [sys.executable, str(REPO / "benchmarks" / "fidelity.py"), "--tables", "haberman", "--families", "vae"]
    command += ["--no-sdv", "--epochs", "2", "--onnx-exporter", "torchscript", "--output", str(output)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=FIDELITY_TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("| haberman (244) | ") == 2  # one table per form
    assert "## Summary" in done.stdout and "vae (best synthserve family)" in done.stdout
    results = json.loads(output.read_text())
    assert results["run"]["machine"]["cpu_count"] >= 1 and results["verdicts"]["best"] == "vae"
    records = results["records"]
    assert [(r["form"], r["generator"]) for r in records] == [("original", "vae"), ("float", "vae")]
    for r in records:
        assert r["error"] is None and r["generated_rows"] == r["train_rows"] == 244 and r["missing_columns"] == []
        assert 0.0 <= r["two_sample_auc"] <= 1.0 and r["outside_share"] == 0.0 and r["invented_share"] == 0.0
        assert r["fit_seconds"] > 0 and r["call_seconds"] > r["fit_seconds"]
        assert r["details"]["epochs_run"] <= 2 and r["details"]["column_kinds"]


def test_keel_runs_trains_both_forms_and_skips_recorded_runs(tmp_path: Path) -> None:
    output = tmp_path / "runs.jsonl"
    command = [sys.executable, str(REPO / "benchmarks" / "keel_runs.py"), "--datasets", "new-thyroid1"]
    command += ["--folds", "0", "--families", "vae", "--epochs", "1", "--onnx-exporter", "torchscript"]
    command += ["--output", str(output)]
    first = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=KEEL_RUNS_TIMEOUT_S)
    assert first.returncode == 0, first.stderr[-3000:]
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert sorted(r["form"] for r in records) == ["float", "int"]
    assert all(r["ok"] and r["error"] is None and r["epochs_run"] == 1 for r in records), records
    assert "runs: 2 recorded (2 in this call), failed: 0" in first.stdout
    second = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=KEEL_RUNS_TIMEOUT_S)
    assert second.returncode == 0 and "runs: 2 recorded (0 in this call), failed: 0" in second.stdout
    assert len(output.read_text().splitlines()) == 2


def test_families_may_carry_training_options_the_config_accepts() -> None:
    assert _family("flow") == "flow"
    assert _family("flow:coupling=spline;spline_bins=12") == "flow:coupling=spline;spline_bins=12"
    with pytest.raises(argparse.ArgumentTypeError, match="'splines' is not one of"):
        _family("splines")
    with pytest.raises(argparse.ArgumentTypeError, match="flow:coupling=curvy: coupling must be one of"):
        _family("flow:coupling=curvy")
