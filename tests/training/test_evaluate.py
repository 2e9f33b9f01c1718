"""Calibration: held-out rows whose log p(x) or score is not finite give finite, ordered thresholds."""

from __future__ import annotations

import json

import numpy as np

from synthserve.contract import Calibration, Scores
from training.evaluate import CALIBRATION_FPR, calibrate


def _scores(log_density: np.ndarray, anomaly: np.ndarray) -> Scores:
    n = len(log_density)
    return Scores(log_density.astype(np.float32), np.zeros((n, 1), np.float32), np.ones((n, 1), np.float32), anomaly)


def test_rows_of_no_density_count_as_the_most_anomalous_at_finite_thresholds() -> None:
    """A value that no training row had gives log p = -inf (or NaN): a quantile between -inf and a number would be
    NaN, which no manifest may hold. Such rows count as the least likely, at the lowest float32."""
    rng = np.random.default_rng(0)
    log_density = rng.normal(-10.0, 2.0, 1000)
    anomaly = rng.normal(0.0, 1.0, 1000).astype(np.float32)
    log_density[:3], log_density[3] = -np.inf, np.nan  # 0.4% of the rows: the 0.1% and 0.5% quantiles fall in them
    anomaly[:2] = np.nan
    calibration = calibrate(_scores(log_density, anomaly))
    lowest = -float(np.finfo(np.float32).max)
    assert calibration.log_prob_quantiles[0] == lowest and lowest < calibration.log_prob_quantiles[1] < -10.0
    assert list(calibration.log_prob_quantiles) == sorted(calibration.log_prob_quantiles)
    assert calibration.anomaly_score_quantiles is not None
    assert calibration.anomaly_score_quantiles[0] == float(np.finfo(np.float32).max)
    finite = np.isfinite(log_density)
    expected = np.quantile(log_density[finite], (np.asarray(CALIBRATION_FPR[2:]) * 1000 - 4) / 996)
    np.testing.assert_allclose(calibration.log_prob_quantiles[2:], expected, rtol=0.01)
    as_json = json.loads(json.dumps(calibration.__dict__, allow_nan=False))  # what a manifest can hold
    assert Calibration(**{k: tuple(v) if isinstance(v, list) else v for k, v in as_json.items()}) == calibration
