"""`SynthClient.score`'s answer: the ScoreDensity responses of a frame's pieces joined into one frame."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from serving.proto import synthesizer_pb2 as pb

__all__ = ["THRESHOLD_SCORE_NAMES", "score_frame"]

# The score an anomaly threshold is on, as the frame's attrs name it (flagged above / below the threshold).
THRESHOLD_SCORE_NAMES = {pb.ANOMALY_SCORE_KIND_ANOMALY_SCORE: "anomaly_score"}  # anything else: "log_density"


def score_frame(
    responses: Sequence[pb.ScoreDensityResponse], classes: Sequence[object], index: pd.Index, fpr: float | None
) -> pd.DataFrame:
    """log_density, log_density_<class> and posterior_<class> (when returned), anomaly_score (models that serve
    one) and is_anomaly (with fpr), one row per row scored, on `index`; with fpr, `attrs` holds the threshold and
    `threshold_score`: "anomaly_score" (flagged above) or "log_density" (flagged below)."""

    def joined(field: str, dtype: str) -> np.ndarray:
        return np.concatenate([np.frombuffer(getattr(r, field), dtype=dtype) for r in responses])

    first = responses[0]
    result = pd.DataFrame({"log_density": joined("log_density", "<f4")}, index=index)
    for field, prefix in (("class_log_density", "log_density_"), ("posteriors", "posterior_")):
        if getattr(first, field):
            values = joined(field, "<f4").reshape(-1, first.num_classes)
            for column, label in enumerate(classes):
                result[f"{prefix}{label}"] = values[:, column]
    if first.anomaly_score:
        result["anomaly_score"] = joined("anomaly_score", "<f4")
    if fpr is not None:
        result["is_anomaly"] = joined("is_anomaly", "u1").astype(bool)
        result.attrs["threshold"] = first.threshold
        result.attrs["threshold_score"] = THRESHOLD_SCORE_NAMES.get(first.threshold_score, "log_density")
    return result
