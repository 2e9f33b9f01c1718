"""Graph outputs by name, capability checks and anomaly thresholds: the rules both servers read graphs by."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from synthserve.contract import (
    ANOMALY_SCORE,
    GRAPH_OUTPUTS,
    LOG_DENSITY,
    AnomalyThreshold,
    Calibration,
    Manifest,
    RequestError,
    Scores,
    TensorSpec,
    UnsupportedRequest,
    anomaly_threshold,
    named_outputs,
    require_graph,
)
from tests.contract.test_manifest import make_manifest


def test_outputs_are_read_by_name_whatever_their_order() -> None:
    spec = make_manifest().graphs["log_prob"]
    # A graph from before the anomaly score: the first three outputs; the score is optional.
    assert tuple(t.name for t in spec.outputs) == GRAPH_OUTPUTS["log_prob"][:3]
    reordered = dataclasses.replace(spec, outputs=spec.outputs[::-1])  # posterior, log_prob_cond, log_prob
    log_p, cond, posterior = np.array([[-1.0], [-2.0]]), np.zeros((2, 2)), np.full((2, 2), 0.5)
    assert named_outputs(reordered, [posterior, cond, log_p])["log_prob"] is log_p
    scores = Scores.from_outputs(reordered, [posterior, cond, log_p])
    np.testing.assert_array_equal(scores.log_density, [-1.0, -2.0])  # [n, 1] -> [n]
    assert scores.posteriors is posterior and scores.class_log_density is cond
    assert scores.anomaly_score is None


def _with_anomaly_score(manifest: Manifest, quantiles: tuple[float, ...] | None = (9.0, 4.0, 1.0)) -> Manifest:
    spec = manifest.graphs["log_prob"]
    graphs = {
        **manifest.graphs,
        "log_prob": dataclasses.replace(
            spec, outputs=(*spec.outputs, TensorSpec(ANOMALY_SCORE, "float32", (None,), "output"))
        ),
    }
    assert manifest.calibration is not None
    calibration = dataclasses.replace(manifest.calibration, anomaly_score_quantiles=quantiles)
    return dataclasses.replace(manifest, graphs=graphs, calibration=calibration)


def test_the_anomaly_score_is_read_by_name_and_flags_above_its_threshold() -> None:
    spec = _with_anomaly_score(make_manifest()).graphs["log_prob"]
    log_p, cond, posterior = np.array([-1.0, -2.0, -3.0]), np.zeros((3, 2)), np.full((3, 2), 0.5)
    score = np.array([[0.5], [7.0], [np.nan]])
    scores = Scores.from_outputs(spec, [log_p, cond, posterior, score])
    np.testing.assert_array_equal(scores.anomaly_score, [0.5, 7.0, np.nan])
    np.testing.assert_array_equal(scores.is_anomaly(AnomalyThreshold(ANOMALY_SCORE, 4.0)), [False, True, True])
    np.testing.assert_array_equal(scores.is_anomaly(AnomalyThreshold(LOG_DENSITY, -1.5)), [False, True, True])
    plain = Scores(log_p, cond, posterior)
    with pytest.raises(ValueError, match="lack"):
        plain.is_anomaly(AnomalyThreshold(ANOMALY_SCORE, 4.0))


def test_the_threshold_is_on_the_anomaly_score_where_the_model_serves_one() -> None:
    manifest = _with_anomaly_score(make_manifest())  # fpr (0.001, 0.01, 0.1) -> score above (9, 4, 1)
    assert anomaly_threshold(manifest, 0.01) == AnomalyThreshold(ANOMALY_SCORE, 4.0)
    between = anomaly_threshold(manifest, 0.05)
    assert between.score == ANOMALY_SCORE and 1.0 < between.value < 4.0  # linear in log(fpr)
    # The graph without the output, or a calibration without its quantiles: log p(x), as before.
    no_quantiles = _with_anomaly_score(make_manifest(), None)
    assert anomaly_threshold(no_quantiles, 0.01) == AnomalyThreshold(LOG_DENSITY, -6.0)
    assert anomaly_threshold(make_manifest(), 0.01) == AnomalyThreshold(LOG_DENSITY, -6.0)


def test_a_calibration_without_anomaly_quantiles_has_no_anomaly_threshold() -> None:
    with pytest.raises(ValueError, match="no anomaly-score quantiles"):
        Calibration((0.01, 0.1), (-6.0, -3.0), 10).anomaly_score_threshold(0.05)


def test_anomaly_flags_are_nan_safe() -> None:
    scores = Scores(np.array([-1.0, -5.0, np.nan, -3.0]), np.zeros((4, 1)), np.ones((4, 1)))
    np.testing.assert_array_equal(scores.is_anomaly(AnomalyThreshold(LOG_DENSITY, -3.0)), [False, True, True, False])


def test_require_graph_names_the_models_capabilities() -> None:
    manifest = make_manifest()
    assert require_graph(manifest, "log_prob") is manifest.graphs["log_prob"]
    with pytest.raises(
        UnsupportedRequest, match=r"model 'toy' \(flow\) has no encode graph \(capabilities: sample, log_prob\)"
    ):
        require_graph(manifest, "encode")


def test_anomaly_threshold_within_the_calibrated_range_only() -> None:
    manifest = make_manifest()  # fpr (0.001, 0.01, 0.1) -> log p (-9, -6, -3)
    assert anomaly_threshold(manifest, 0.01) == AnomalyThreshold(LOG_DENSITY, -6.0)
    assert -6.0 < anomaly_threshold(manifest, 0.05).value < -3.0  # linear in log(fpr)
    for fpr in (0.5, 0.0001, float("nan")):
        with pytest.raises(RequestError, match=r"fpr must be within the calibrated range \[0.001, 0.1\]"):
            anomaly_threshold(manifest, fpr)
    with pytest.raises(RequestError, match="fpr: model 'toy' has no calibration"):
        anomaly_threshold(dataclasses.replace(manifest, calibration=None), 0.01)
