"""The graphs an exported model may have and the outputs each returns, by name.

Training exports each graph with these output names (in this order); the gRPC server, the TorchServe handler and
the benchmarks read outputs by name through `named_outputs` and `Scores`, never by position.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from synthserve.contract.errors import RequestError, UnsupportedRequest
from synthserve.contract.manifest import GraphSpec, Manifest

__all__ = [
    "ANOMALY_SCORE",
    "CLASS_LOG_DENSITY",
    "CLASS_MARGIN",
    "GRAPH_OUTPUTS",
    "LATENT",
    "LOG_DENSITY",
    "POSTERIOR",
    "ROWS",
    "AnomalyThreshold",
    "Scores",
    "anomaly_threshold",
    "named_outputs",
    "require_graph",
]

ROWS = "rows"  # sample: [n, D] float32 rows in graph units (codes for categorical columns)
LOG_DENSITY = "log_prob"  # log_prob: [n] log p(x)
CLASS_LOG_DENSITY = "log_prob_cond"  # log_prob: [n, C] log p(x | c)
POSTERIOR = "posterior"  # log_prob: [n, C] p(c | x)
# log_prob: [n] higher = more anomalous (density mixed with distance to the training rows); graphs of models
# trained before it existed lack it, and their anomaly flags use log p(x).
ANOMALY_SCORE = "anomaly_score"
# log_prob: [n, C] log of the distance to the nearest training row of any other class over that to the nearest of
# class c: what best-of-k ranks candidates by (`best_candidates`); graphs without it rank by the posterior.
CLASS_MARGIN = "class_margin"
LATENT = "latent"  # encode: [n, L]

GRAPH_OUTPUTS: Mapping[str, tuple[str, ...]] = {
    "sample": (ROWS,),
    "sample_guided": (ROWS,),
    "log_prob": (LOG_DENSITY, CLASS_LOG_DENSITY, POSTERIOR, ANOMALY_SCORE, CLASS_MARGIN),
    "encode": (LATENT,),
}


def require_graph(manifest: Manifest, graph: str) -> GraphSpec:
    """The graph, or UnsupportedRequest: density on a GAN, encoding without an encoder."""
    spec = manifest.graphs.get(graph)
    if spec is None:
        raise UnsupportedRequest(
            f"model {manifest.name!r} ({manifest.family}) has no {graph} graph "
            f"(capabilities: {', '.join(manifest.capabilities)})"
        )
    return spec


@dataclass(frozen=True)
class AnomalyThreshold:
    """How rows are flagged at a false-positive rate: by `score`, ANOMALY_SCORE above `value` or, for models whose
    graph has no anomaly score, LOG_DENSITY below it."""

    score: str  # ANOMALY_SCORE or LOG_DENSITY
    value: float


def anomaly_threshold(manifest: Manifest, fpr: float) -> AnomalyThreshold:
    """The threshold that flags a fraction `fpr` of the manifest's held-out rows: on the anomaly score when the
    log_prob graph serves one and the calibration has its quantiles, else on log p(x); RequestError naming `fpr`
    and the calibrated range otherwise."""
    calibration = manifest.calibration
    if calibration is None:
        raise RequestError(f"fpr: model {manifest.name!r} has no calibration")
    if not calibration.fpr[0] <= fpr <= calibration.fpr[-1]:
        raise RequestError(
            f"fpr must be within the calibrated range [{calibration.fpr[0]}, {calibration.fpr[-1]}], got {fpr}"
        )
    spec = manifest.graphs.get("log_prob")
    if calibration.anomaly_score_quantiles is not None and spec is not None and spec.has_output(ANOMALY_SCORE):
        return AnomalyThreshold(ANOMALY_SCORE, calibration.anomaly_score_threshold(fpr))
    return AnomalyThreshold(LOG_DENSITY, calibration.threshold(fpr))


def named_outputs(spec: GraphSpec, outputs: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """A graph run's outputs (in `spec.outputs` order) by name."""
    return {tensor.name: value for tensor, value in zip(spec.outputs, outputs)}


@dataclass(frozen=True)
class Scores:
    """What a `log_prob` graph says about rows."""

    log_density: np.ndarray  # [n] log p(x)
    class_log_density: np.ndarray  # [n, C] log p(x | c)
    posteriors: np.ndarray  # [n, C] p(c | x)
    anomaly_score: np.ndarray | None = None  # [n], None when the graph has none

    @classmethod
    def from_outputs(cls, spec: GraphSpec, outputs: Sequence[np.ndarray]) -> Scores:
        named = named_outputs(spec, outputs)
        anomaly = named.get(ANOMALY_SCORE)
        return cls(
            named[LOG_DENSITY].reshape(-1),
            named[CLASS_LOG_DENSITY],
            named[POSTERIOR],
            None if anomaly is None else anomaly.reshape(-1),
        )

    def is_anomaly(self, threshold: AnomalyThreshold) -> np.ndarray:
        """bool [n]: rows past `threshold`. NaN-safe: a row whose score is not a number (far outside anything
        seen) is flagged, never passed."""
        if threshold.score == ANOMALY_SCORE:
            if self.anomaly_score is None:
                raise ValueError("the threshold is on the anomaly score, which these scores lack")
            return ~(self.anomaly_score <= threshold.value)
        return ~(self.log_density >= threshold.value)
