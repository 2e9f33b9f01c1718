"""The served anomaly score: k-nearest distance to the training rows, each term centred and scaled on unseen rows,
exported inside the log_prob graph and calibrated on held-out rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from synthserve.contract import (
    ANOMALY_SCORE,
    CLASS_MARGIN,
    GRAPH_OUTPUTS,
    LOG_DENSITY,
    anomaly_threshold,
    load_manifest,
    noise_feeds,
)
from tests.training.test_neighbors import brute_force_distance, neighbors_of, rows_of
from training.anomaly import ANOMALY_NEIGHBORS, NORMAL_IQR, fit_anomaly_score, nearest_distance
from training.checkpoint import CHECKPOINT_FILE, load_checkpoint
from training.cli import main as cli_main
from training.exported import ExportedModel
from training.graphs import run_graph

DENSITY_FAMILIES = ("flow", "vae", "autoregressive")  # the families with a log_prob graph


def _log_density(rows: np.ndarray) -> np.ndarray:  # a stand-in for a model's log p(x): any fixed function will do
    return -0.5 * ((rows[:, 0] - 5.0) / 2.0) ** 2


def test_each_term_counts_in_units_of_its_spread_on_the_validation_rows() -> None:
    validation = rows_of(400, 2)
    neighbors = neighbors_of(rows_of(300, 0))
    score = fit_anomaly_score(_log_density, neighbors, validation)
    params = score.params
    with torch.no_grad():
        distance = nearest_distance(neighbors, torch.from_numpy(validation)).numpy()
    for values, center, scale in (
        (-_log_density(validation), params.density_center, params.density_scale),
        (distance, params.distance_center, params.distance_scale),
    ):
        standard = (values - center) / scale
        q1, median, q3 = np.percentile(standard, [25, 50, 75])
        assert median == pytest.approx(0.0, abs=1e-5) and (q3 - q1) == pytest.approx(NORMAL_IQR, rel=1e-4)
    # The score is the sum of the two standardized terms.
    log_p = torch.from_numpy(_log_density(validation[:5]))
    with torch.no_grad():
        mixed = score(log_p, torch.from_numpy(distance[:5])).numpy()
    expected = (-log_p.numpy() - params.density_center) / params.density_scale
    expected += (distance[:5] - params.distance_center) / params.distance_scale
    np.testing.assert_allclose(mixed, expected, rtol=1e-5, atol=1e-5)


def test_a_tiny_table_calibrates_on_its_training_rows_each_left_out() -> None:
    train = rows_of(30, 0)
    score = fit_anomaly_score(_log_density, neighbors_of(train), rows_of(3, 2))  # too few validation rows
    leave_one_out = [
        brute_force_distance(np.delete(train, i, axis=0).astype(np.float64), train[i : i + 1], ANOMALY_NEIGHBORS)[0]
        for i in range(len(train))
    ]
    # The scale of the numeric columns comes from all reference rows, the brute force's from the 29 others: close.
    assert score.params.distance_center == pytest.approx(np.median(leave_one_out), rel=0.05)


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
        eager = dict(zip(GRAPH_OUTPUTS["log_prob"], run_graph(model, "log_prob", tuple(inputs)), strict=True))
    np.testing.assert_allclose(served, eager[ANOMALY_SCORE].numpy(), rtol=1e-3, atol=1e-3)
    assert served[-1] > calibration.anomaly_score_threshold(calibration.fpr[0])


def test_no_reference_rows_leaves_the_training_rows_out_of_the_files(
    trained_store: Path, mixed_csv: Path, tmp_path: Path
) -> None:
    """`--no-reference-rows`: log_prob has neither the score nor the class margin, the manifest no score quantiles,
    flags fall back to log p(x), and both graph files shrink by at least the reference rows the default holds."""
    argv = ["train", "--data", str(mixed_csv), "--model", "flow", "--name", "private", "--label", "outcome"]
    argv += ["--model-store", str(tmp_path), "--epochs", "2", "--threads", "1", "--no-progress", "--no-plots"]
    assert cli_main([*argv, "--no-reference-rows"]) == 0
    private = tmp_path / "private" / "1"
    manifest = load_manifest(private)
    assert not manifest.graphs["log_prob"].has_output(ANOMALY_SCORE)
    assert not manifest.graphs["log_prob"].has_output(CLASS_MARGIN)
    assert manifest.calibration is not None and manifest.calibration.anomaly_score_quantiles is None
    assert anomaly_threshold(manifest, 0.05).score == LOG_DENSITY
    assert (
        ExportedModel(private).scores(ExportedModel(private).sample(np.zeros(5, dtype=np.int64), 0)).anomaly_score
        is None
    )
    default = trained_store / "mixed-flow" / "1"
    reference = load_checkpoint(default / CHECKPOINT_FILE).neighbors
    assert reference is not None
    reference_bytes = 4 * reference.params.reference.size
    assert reference_bytes > 4 * 100  # the mixed table's training rows are in the default version
    for graph in ("log_prob.onnx", "model.pt"):
        assert (default / graph).stat().st_size - (private / graph).stat().st_size >= reference_bytes, graph
