"""Graph outputs by name, capability checks and anomaly thresholds: the rules both servers read graphs by."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from synthserve.contract import (
    GRAPH_OUTPUTS,
    RequestError,
    Scores,
    UnsupportedRequest,
    anomaly_threshold,
    named_outputs,
    require_graph,
)
from tests.contract.test_manifest import make_manifest


def test_outputs_are_read_by_name_whatever_their_order() -> None:
    spec = make_manifest().graphs["log_prob"]
    assert tuple(t.name for t in spec.outputs) == GRAPH_OUTPUTS["log_prob"]
    reordered = dataclasses.replace(spec, outputs=spec.outputs[::-1])  # posterior, log_prob_cond, log_prob
    log_p, cond, posterior = np.array([[-1.0], [-2.0]]), np.zeros((2, 2)), np.full((2, 2), 0.5)
    assert named_outputs(reordered, [posterior, cond, log_p])["log_prob"] is log_p
    scores = Scores.from_outputs(reordered, [posterior, cond, log_p])
    np.testing.assert_array_equal(scores.log_density, [-1.0, -2.0])  # [n, 1] -> [n]
    assert scores.posteriors is posterior and scores.class_log_density is cond


def test_anomaly_flags_are_nan_safe() -> None:
    scores = Scores(np.array([-1.0, -5.0, np.nan, -3.0]), np.zeros((4, 1)), np.ones((4, 1)))
    np.testing.assert_array_equal(scores.is_anomaly(-3.0), [False, True, True, False])


def test_require_graph_names_the_models_capabilities() -> None:
    manifest = make_manifest()
    assert require_graph(manifest, "log_prob") is manifest.graphs["log_prob"]
    with pytest.raises(
        UnsupportedRequest, match=r"model 'toy' \(flow\) has no encode graph \(capabilities: sample, log_prob\)"
    ):
        require_graph(manifest, "encode")


def test_anomaly_threshold_within_the_calibrated_range_only() -> None:
    manifest = make_manifest()  # fpr (0.001, 0.01, 0.1) -> log p (-9, -6, -3)
    assert anomaly_threshold(manifest, 0.01) == -6.0
    assert -6.0 < anomaly_threshold(manifest, 0.05) < -3.0  # linear in log(fpr)
    for fpr in (0.5, 0.0001, float("nan")):
        with pytest.raises(RequestError, match=r"fpr must be within the calibrated range \[0.001, 0.1\]"):
            anomaly_threshold(manifest, fpr)
    with pytest.raises(RequestError, match="fpr: model 'toy' has no calibration"):
        anomaly_threshold(dataclasses.replace(manifest, calibration=None), 0.01)
