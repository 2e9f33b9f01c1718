"""ScoreDensity responses of a frame's pieces joined into one frame, with the anomaly score and its threshold."""

from __future__ import annotations

import numpy as np
import pandas as pd

from serving.client_scores import score_frame
from serving.proto import synthesizer_pb2 as pb


def _response(log_p: list[float], score: list[float], flags: list[int]) -> pb.ScoreDensityResponse:
    n = len(log_p)
    posteriors = np.tile([0.25, 0.75], (n, 1)).astype("<f4")
    return pb.ScoreDensityResponse(
        num_rows=n,
        num_classes=2,
        log_density=np.asarray(log_p, "<f4").tobytes(),
        posteriors=posteriors.tobytes(),
        anomaly_score=np.asarray(score, "<f4").tobytes(),
        is_anomaly=np.asarray(flags, "u1").tobytes(),
        threshold=2.5,
        threshold_score=pb.ANOMALY_SCORE_KIND_ANOMALY_SCORE,
    )


def test_pieces_join_in_order_with_the_anomaly_score_and_its_threshold() -> None:
    responses = [_response([-1.0, -2.0], [0.5, 3.0], [0, 1]), _response([-9.0], [7.0], [1])]
    frame = score_frame(responses, ["neg", "pos"], pd.Index([10, 11, 12]), fpr=0.01)
    assert list(frame.columns) == ["log_density", "posterior_neg", "posterior_pos", "anomaly_score", "is_anomaly"]
    assert list(frame.index) == [10, 11, 12]
    np.testing.assert_array_equal(frame["anomaly_score"], [0.5, 3.0, 7.0])
    np.testing.assert_array_equal(frame["is_anomaly"], [False, True, True])
    assert frame.attrs == {"threshold": 2.5, "threshold_score": "anomaly_score"}


def test_a_model_without_the_score_flags_on_log_density() -> None:
    response = _response([-1.0], [], [0])
    response.ClearField("anomaly_score")
    response.threshold_score = pb.ANOMALY_SCORE_KIND_LOG_DENSITY
    frame = score_frame([response], ["neg", "pos"], pd.Index([0]), fpr=0.01)
    assert "anomaly_score" not in frame and frame.attrs["threshold_score"] == "log_density"
    assert "is_anomaly" not in score_frame([response], ["neg", "pos"], pd.Index([0]), fpr=None)
