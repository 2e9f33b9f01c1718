"""The served anomaly score: k-nearest distance to the training rows, each term centred and scaled on unseen rows,
exported inside the log_prob graph and calibrated on held-out rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from synthserve.contract import (
    ANOMALY_SCORE,
    LOG_DENSITY,
    Column,
    Schema,
    anomaly_threshold,
    load_manifest,
    noise_feeds,
)
from training.anomaly import (
    ANOMALY_NEIGHBORS,
    MAX_REFERENCE_ROWS,
    NORMAL_IQR,
    ONEHOT_MAX_LEVELS,
    fit_anomaly_score,
)
from training.checkpoint import CHECKPOINT_FILE, load_checkpoint
from training.cli import main as cli_main
from training.exported import ExportedModel
from training.graphs import run_graph

SCHEMA = Schema(
    (
        Column("a", "continuous", "float64"),
        Column("c", "categorical", "object", categories=("x", "y", "z")),
        Column("b", "integer", "int64"),
    ),
    None,
)
DENSITY_FAMILIES = ("flow", "vae", "autoregressive")  # the families with a log_prob graph


def _rows(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.normal(5.0, 2.0, n), rng.integers(0, 3, n), rng.poisson(30, n)], axis=1).astype(np.float32)


def _log_density(rows: np.ndarray) -> np.ndarray:  # a stand-in for a model's log p(x): any fixed function will do
    return -0.5 * ((rows[:, 0] - 5.0) / 2.0) ** 2


def _brute_force_distance(reference: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    mean, std = reference[:, [0, 2]].mean(0), reference[:, [0, 2]].std(0)
    ref, x = (reference[:, [0, 2]] - mean) / std, (rows[:, [0, 2]] - mean) / std
    x = np.where(np.isnan(x), 0.0, x)  # a gap counts as the column's mean
    squared = ((x[:, None, :] - ref[None, :, :]) ** 2).sum(-1) + (rows[:, None, 1] != reference[None, :, 1])
    return np.sort(np.sqrt(squared), axis=1)[:, :k].mean(1)


def test_the_distance_is_the_mean_distance_to_the_nearest_training_rows() -> None:
    train, queries = _rows(300, 0), _rows(40, 1)
    queries[0, 0] = np.nan
    queries[1, 0] = 500.0  # far out
    score = fit_anomaly_score(_log_density, SCHEMA, train, _rows(50, 2), seed=0)
    with torch.no_grad():
        served = score.distance(torch.from_numpy(queries)).numpy()
    expected = _brute_force_distance(train.astype(np.float64), queries.astype(np.float64), ANOMALY_NEIGHBORS)
    np.testing.assert_allclose(served, expected, rtol=1e-4, atol=1e-3)
    assert served[1] > 100 * np.median(served)


def test_each_term_counts_in_units_of_its_spread_on_the_validation_rows() -> None:
    validation = _rows(400, 2)
    score = fit_anomaly_score(_log_density, SCHEMA, _rows(300, 0), validation, seed=0)
    params = score.params
    with torch.no_grad():
        distance = score.distance(torch.from_numpy(validation)).numpy()
    for values, center, scale in (
        (-_log_density(validation), params.density_center, params.density_scale),
        (distance, params.distance_center, params.distance_scale),
    ):
        standard = (values - center) / scale
        q1, median, q3 = np.percentile(standard, [25, 50, 75])
        assert median == pytest.approx(0.0, abs=1e-5) and (q3 - q1) == pytest.approx(NORMAL_IQR, rel=1e-4)
    # The score is the sum of the two standardized terms.
    rows = torch.from_numpy(validation[:5])
    log_p = torch.from_numpy(_log_density(validation[:5]))
    with torch.no_grad():
        mixed = score(rows, log_p).numpy()
    expected = (-log_p.numpy() - params.density_center) / params.density_scale
    expected += (distance[:5] - params.distance_center) / params.distance_scale
    np.testing.assert_allclose(mixed, expected, rtol=1e-5, atol=1e-5)


def test_a_tiny_table_calibrates_on_its_training_rows_each_left_out() -> None:
    train = _rows(30, 0)
    score = fit_anomaly_score(_log_density, SCHEMA, train, _rows(3, 2), seed=0)  # too few validation rows
    leave_one_out = [
        _brute_force_distance(np.delete(train, i, axis=0).astype(np.float64), train[i : i + 1], ANOMALY_NEIGHBORS)[0]
        for i in range(len(train))
    ]
    # The scale of the numeric columns comes from all reference rows, the brute force's from the 29 others: close.
    assert score.params.distance_center == pytest.approx(np.median(leave_one_out), rel=0.05)


def test_reference_rows_are_capped_and_drawn_from_the_seed() -> None:
    train = _rows(MAX_REFERENCE_ROWS + 500, 0)
    first = fit_anomaly_score(_log_density, SCHEMA, train, _rows(50, 2), seed=3)
    again = fit_anomaly_score(_log_density, SCHEMA, train, _rows(50, 2), seed=3)
    assert first.params.reference.shape == (MAX_REFERENCE_ROWS, 3)
    np.testing.assert_array_equal(first.params.reference, again.params.reference)


@pytest.mark.parametrize("levels", [3, ONEHOT_MAX_LEVELS + 1])  # one-hot in the product / compared code by code
def test_an_all_categorical_table_counts_differing_codes(levels: int) -> None:
    schema = Schema((Column("c", "categorical", "object", categories=tuple(range(levels))),), None)
    train = np.array([[0.0]] * 20 + [[1.0]] * 20, dtype=np.float32)
    score = fit_anomaly_score(lambda r: np.zeros(len(r)), schema, train, train, seed=0)
    with torch.no_grad():
        distance = score.distance(torch.tensor([[0.0], [2.0], [float(levels + 5)]])).numpy()
    np.testing.assert_allclose(distance, [0.0, 1.0, 1.0], atol=1e-6)  # a code never seen differs from every row


def test_a_many_level_category_is_compared_as_a_small_one_is() -> None:
    rng = np.random.default_rng(0)
    train, queries = _rows(200, 0), _rows(30, 1)
    for rows in (train, queries):
        rows[:, 1] = rng.integers(0, 3, len(rows))
    distances = []
    for levels in (3, ONEHOT_MAX_LEVELS + 1):
        categories = tuple(range(levels))
        schema = Schema(
            (SCHEMA.columns[0], Column("c", "categorical", "int64", categories=categories), SCHEMA.columns[2]), None
        )
        score = fit_anomaly_score(_log_density, schema, train, _rows(50, 2), seed=0)
        with torch.no_grad():
            distances.append(score.distance(torch.from_numpy(queries)).numpy())
    np.testing.assert_allclose(distances[0], distances[1], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("family", DENSITY_FAMILIES)
def test_the_published_log_prob_graph_serves_the_calibrated_score(trained_store: Path, family: str) -> None:
    """Through the CLI-trained version: the ONNX graph's score equals the checkpoint's eager score, the calibrated
    thresholds fall as the false-positive rate grows, and a row far from the training data is flagged."""
    version = trained_store / f"mixed-{family}" / "1"
    manifest = load_manifest(version)
    assert manifest.graphs["log_prob"].has_output(ANOMALY_SCORE)
    calibration = manifest.calibration
    assert calibration is not None and calibration.anomaly_score_quantiles is not None
    assert list(calibration.anomaly_score_quantiles) == sorted(calibration.anomaly_score_quantiles, reverse=True)
    exported = ExportedModel(version)
    rows = exported.sample(np.zeros(200, dtype=np.int64), seed=4)
    far = rows[:1].copy()
    numeric = [i for i, c in enumerate(manifest.schema.columns) if c.kind == "continuous"]
    far[0, numeric] = far[0, numeric] * 50 + 1e4
    served = exported.scores(np.vstack([rows, far])).anomaly_score
    assert served is not None
    model = load_checkpoint(version / CHECKPOINT_FILE)
    spec = manifest.graphs["log_prob"]
    feeds = noise_feeds(spec, 0, 0, len(rows) + 1)
    inputs = [torch.from_numpy(np.vstack([rows, far]))] + [torch.from_numpy(feeds[t.name]) for t in spec.noise_inputs]
    with torch.no_grad():
        eager = run_graph(model, "log_prob", tuple(inputs))[-1].numpy()
    np.testing.assert_allclose(served, eager, rtol=1e-3, atol=1e-3)
    assert served[-1] > calibration.anomaly_score_threshold(calibration.fpr[0])


def test_no_anomaly_score_leaves_the_training_rows_out_of_the_files(
    trained_store: Path, mixed_csv: Path, tmp_path: Path
) -> None:
    """`--no-anomaly-score`: log_prob has no score output, the manifest no score quantiles, flags fall back to
    log p(x), and both graph files shrink by at least the reference rows the default version holds."""
    argv = ["train", "--data", str(mixed_csv), "--model", "flow", "--name", "private", "--label", "outcome"]
    argv += ["--model-store", str(tmp_path), "--epochs", "2", "--threads", "1", "--no-progress", "--no-plots"]
    assert cli_main([*argv, "--no-anomaly-score"]) == 0
    private = tmp_path / "private" / "1"
    manifest = load_manifest(private)
    assert not manifest.graphs["log_prob"].has_output(ANOMALY_SCORE)
    assert manifest.calibration is not None and manifest.calibration.anomaly_score_quantiles is None
    assert anomaly_threshold(manifest, 0.05).score == LOG_DENSITY
    assert (
        ExportedModel(private).scores(ExportedModel(private).sample(np.zeros(5, dtype=np.int64), 0)).anomaly_score
        is None
    )
    default = trained_store / "mixed-flow" / "1"
    reference = load_checkpoint(default / CHECKPOINT_FILE).anomaly
    assert reference is not None
    reference_bytes = 4 * reference.params.reference.size
    assert reference_bytes > 4 * 100  # the mixed table's training rows are in the default version
    for graph in ("log_prob.onnx", "model.pt"):
        assert (default / graph).stat().st_size - (private / graph).stat().st_size >= reference_bytes, graph
