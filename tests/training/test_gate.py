"""The quality gate refuses collapsed and copying models, passes sound ones, and the override publishes anyway."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import training.pipeline as pipeline
from synthserve.contract import Column, LabelSpec, Schema, load_manifest
from training.cli import main as cli_main
from training.errors import DataError
from training.evaluate import sample_metrics
from training.gate import MAX_C2ST_AUC, QualityGateError, judge, summary_lines, verdict
from training.pipeline import TrainRequest, train_and_publish

SCHEMA = Schema(
    (
        Column("amount", "continuous", "float64", min=-10.0, max=10.0, missing_rate=0.1),
        Column("count", "integer", "int64", min=0.0, max=50.0),
        Column("colour", "categorical", "object", categories=("red", "green", "blue")),
    ),
    LabelSpec("y", "object", ("no", "yes"), (0.5, 0.5)),
)


def _table(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows in SCHEMA's graph order (10% gaps in `amount`) and their classes; the class shifts `amount`."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    rows = np.stack([rng.normal(2.0 * labels, 1.0).round(3), rng.poisson(10, n), rng.integers(0, 3, n)], axis=1).astype(
        np.float32
    )
    rows[rng.random(n) < 0.1, 0] = np.nan
    return rows, labels


def _copies(train: tuple[np.ndarray, np.ndarray], labels: np.ndarray) -> np.ndarray:
    """Training rows, one of the same class for each of `labels`."""
    picks = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        picks[labels == c] = np.flatnonzero(train[1] == c)[: int((labels == c).sum())]
    return train[0][picks]


def _reasons(
    synthetic: np.ndarray, heldout: tuple[np.ndarray, np.ndarray], train: tuple[np.ndarray, np.ndarray]
) -> str:
    metrics = sample_metrics(heldout[0], heldout[1], synthetic, SCHEMA, train[0], train[1])
    return " | ".join(judge(metrics))


def test_fresh_rows_of_the_same_distribution_pass() -> None:
    heldout, train = _table(300, seed=1), _table(1200, seed=2)
    fresh, _ = _table(300, seed=3)
    assert _reasons(fresh, heldout, train) == ""


def test_one_constant_row_is_refused() -> None:
    heldout, train = _table(300, seed=1), _table(1200, seed=2)
    constant = np.tile(np.array([[1.0, 10.0, 0.0]]), (300, 1))
    reasons = _reasons(constant, heldout, train)
    assert f">= {MAX_C2ST_AUC}" in reasons and "one value per class in amount, count, colour" in reasons
    assert "collapsed: every column generates one value per class" in reasons


def test_a_collapse_is_refused_even_where_the_classifier_sees_too_few_rows() -> None:
    heldout, train = _table(30, seed=1), _table(120, seed=2)
    one_per_class = np.where(heldout[1][:, None] == 1, [[2.0, 11.0, 1.0]], [[0.0, 9.0, 2.0]])
    assert "collapsed: every column" in _reasons(one_per_class, heldout, train)


def test_copies_of_training_rows_are_refused() -> None:
    heldout, train = _table(300, seed=1), _table(1200, seed=2)
    reasons = _reasons(_copies(train, heldout[1]), heldout, train)
    assert "copies training rows: 100% of generated rows are exact copies of a training row" in reasons
    assert "(held-out real rows: 9%)" in reasons  # rows with a gap in `amount` repeat by chance
    assert "near-copies" in reasons and "two-sample AUC" not in reasons  # copies look real: privacy rules see them


def test_slightly_moved_training_rows_are_refused() -> None:
    heldout, train = _table(300, seed=1), _table(1200, seed=2)
    moved = _copies(train, heldout[1])
    moved[:, 0] += 0.001
    reasons = _reasons(moved, heldout, train)
    assert "near-copies of training rows" in reasons and "exact copies" not in reasons


def test_a_finite_grid_faithfully_modelled_passes_and_memorized_is_refused() -> None:
    """Every row of the table is a distinct point of a small grid (car-good): held-out rows never repeat training
    rows, yet faithful generated rows mostly do. They also reach the unseen held-out rows, memorized ones do not."""
    schema = Schema(tuple(Column(f"c{i}", "categorical", "int64", categories=(0, 1, 2, 3)) for i in range(4)))
    grid = np.stack(np.meshgrid(*[np.arange(4)] * 4, indexing="ij"), -1).reshape(-1, 4).astype(np.float32)
    order = np.random.default_rng(0).permutation(len(grid))
    train, heldout = grid[order[:205]], grid[order[205:]]
    zeros = np.zeros(len(grid), dtype=np.int64)
    faithful = grid[np.random.default_rng(1).integers(0, len(grid), len(heldout))]
    metrics = sample_metrics(heldout, zeros[: len(heldout)], faithful, schema, train, zeros[: len(train)])
    privacy = metrics["privacy"]
    assert privacy["exact_copies_heldout"] == 0.0 and privacy["exact_copies_synthetic"] > 0.6
    assert judge(metrics) == ()
    memorized = train[np.random.default_rng(2).integers(0, len(train), len(heldout))]
    metrics = sample_metrics(heldout, zeros[: len(heldout)], memorized, schema, train, zeros[: len(train)])
    reasons = " ".join(judge(metrics))
    assert "copies training rows: 100%" in reasons and "near-copies" in reasons


def test_rows_that_repeat_as_real_rows_repeat_pass() -> None:
    """Two discrete columns: fresh real rows repeat training rows, and so may generated ones."""
    schema = Schema(SCHEMA.columns[1:], SCHEMA.label)
    rng = np.random.default_rng(0)

    def table(n: int) -> tuple[np.ndarray, np.ndarray]:
        return np.stack([rng.integers(0, 3, n), rng.integers(0, 3, n)], axis=1).astype(np.float32), rng.integers(
            0, 2, n
        )

    (heldout, labels), (train, train_labels), (synthetic, _) = table(300), table(1200), table(300)
    metrics = sample_metrics(heldout, labels, synthetic, schema, train, train_labels)
    assert metrics["privacy"]["exact_copies_synthetic"] == metrics["privacy"]["exact_copies_heldout"] == 1.0
    assert judge(metrics) == ()


def test_refusal_is_one_line_naming_the_override() -> None:
    error = QualityGateError("m", ["first reason", "second reason"])
    assert isinstance(error, DataError) and "\n" not in str(error)
    assert str(error) == (
        "model 'm' not published, the quality gate refused it: first reason; second reason "
        "(pass --accept-weak-model to publish it anyway)"
    )
    assert verdict(["r"], accept_weak=True)["accepted_by_override"] is True
    assert verdict([], accept_weak=True)["accepted_by_override"] is False


def _collapse_the_generator(monkeypatch: pytest.MonkeyPatch) -> None:
    """Training as usual, then a GAN generator with all weights 0: one value per scalar column."""
    train_model = pipeline.train_model

    def collapsed(model: Any, *args: Any, **kwargs: Any) -> Any:
        result = train_model(model, *args, **kwargs)
        with torch.no_grad():
            for parameter in model.generator.parameters():
                parameter.zero_()
        return result

    monkeypatch.setattr(pipeline, "train_model", collapsed)


def _gan_request(data: Path, store: Path, **fields: Any) -> TrainRequest:
    return TrainRequest(
        str(data), "gan", "collapsed", store, label="outcome", epochs=1, progress=False, plots=False, **fields
    )


def test_collapsed_gan_is_refused_and_not_published(
    tmp_path: Path, mixed_csv: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _collapse_the_generator(monkeypatch)
    argv = ["train", "--data", str(mixed_csv), "--model", "gan", "--name", "collapsed", "--label", "outcome"]
    argv += ["--model-store", str(tmp_path), "--epochs", "1", "--threads", "1", "--no-progress", "--no-plots"]
    assert cli_main(argv) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: model 'collapsed' not published, the quality gate refused it: two-sample AUC")
    assert "one value per class in height_cm, visits" in error and error.endswith("to publish it anyway)")
    assert list((tmp_path / "collapsed").iterdir()) == []  # no version, no staging left behind


def test_override_publishes_a_refused_model_with_its_verdict(
    tmp_path: Path, mixed_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _collapse_the_generator(monkeypatch)
    version = train_and_publish(_gan_request(mixed_csv, tmp_path, accept_weak=True))
    assert version == tmp_path / "collapsed" / "1"
    gate = load_manifest(version).metrics["quality_gate"]
    assert gate["passed"] is False and gate["accepted_by_override"] is True
    assert gate["reasons"][0].startswith("two-sample AUC")
    report = json.loads((version / "report.json").read_text())
    assert report["metrics"]["quality_gate"] == gate


def test_sound_model_passes_with_every_figure_in_report_and_manifest(tmp_path: Path, mixed_csv: Path) -> None:
    request = TrainRequest(
        str(mixed_csv), "flow", "sound", tmp_path, label="outcome", epochs=2, progress=False, plots=False
    )
    version = train_and_publish(request)
    assert version is not None
    manifest = load_manifest(version)
    metrics = manifest.metrics
    report = json.loads((version / "report.json").read_text())["metrics"]
    for key in ("c2st_auc", "column_fidelity", "collapsed_columns", "privacy", "utility", "quality_gate"):
        assert report[key] == metrics[key], key
    assert metrics["quality_gate"]["passed"] is True and metrics["quality_gate"]["reasons"] == []
    assert 0.5 <= metrics["c2st_auc"] < MAX_C2ST_AUC
    assert set(metrics["column_fidelity"]) == {"height_cm", "visits", "colour", "member", "discount"}
    privacy = metrics["privacy"]
    assert privacy["exact_copies_synthetic"] == 0.0 and privacy["dcr_median_synthetic"] > 0
    assert (
        privacy["n_query_rows"] == metrics["n_heldout"]
        and privacy["n_reference_rows"] == manifest.training["split"]["train"]
    )
    assert 0.0 <= metrics["utility"]["tstr_auc"] <= 1.0 and metrics["utility"]["trtr_auc"] > 0.9
    lines = summary_lines(metrics)
    assert lines[0].startswith("two-sample AUC") and lines[-1] == "quality gate: passed"
    assert [line.split(":")[0] for line in lines[1:4]] == ["column fidelity", "privacy", "utility"]
