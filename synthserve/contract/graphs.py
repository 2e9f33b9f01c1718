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
    "CLASS_LOG_DENSITY",
    "GRAPH_OUTPUTS",
    "LATENT",
    "LOG_DENSITY",
    "POSTERIOR",
    "ROWS",
    "Scores",
    "anomaly_threshold",
    "named_outputs",
    "require_graph",
]

ROWS = "rows"  # sample: [n, D] float32 rows in graph units (codes for categorical columns)
LOG_DENSITY = "log_prob"  # log_prob: [n] log p(x)
CLASS_LOG_DENSITY = "log_prob_cond"  # log_prob: [n, C] log p(x | c)
POSTERIOR = "posterior"  # log_prob: [n, C] p(c | x)
LATENT = "latent"  # encode: [n, L]

GRAPH_OUTPUTS: Mapping[str, tuple[str, ...]] = {
    "sample": (ROWS,),
    "sample_guided": (ROWS,),
    "log_prob": (LOG_DENSITY, CLASS_LOG_DENSITY, POSTERIOR),
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


def anomaly_threshold(manifest: Manifest, fpr: float) -> float:
    """The log-density below which a row is an anomaly at false-positive rate `fpr` (the manifest's held-out
    calibration), or RequestError naming `fpr` and the calibrated range."""
    calibration = manifest.calibration
    if calibration is None:
        raise RequestError(f"fpr: model {manifest.name!r} has no calibration")
    if not calibration.fpr[0] <= fpr <= calibration.fpr[-1]:
        raise RequestError(
            f"fpr must be within the calibrated range [{calibration.fpr[0]}, {calibration.fpr[-1]}], got {fpr}"
        )
    return calibration.threshold(fpr)


def named_outputs(spec: GraphSpec, outputs: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """A graph run's outputs (in `spec.outputs` order) by name."""
    return {tensor.name: value for tensor, value in zip(spec.outputs, outputs)}


@dataclass(frozen=True)
class Scores:
    """What a `log_prob` graph says about rows."""

    log_density: np.ndarray  # [n] log p(x)
    class_log_density: np.ndarray  # [n, C] log p(x | c)
    posteriors: np.ndarray  # [n, C] p(c | x)

    @classmethod
    def from_outputs(cls, spec: GraphSpec, outputs: Sequence[np.ndarray]) -> Scores:
        named = named_outputs(spec, outputs)
        return cls(named[LOG_DENSITY].reshape(-1), named[CLASS_LOG_DENSITY], named[POSTERIOR])

    def is_anomaly(self, threshold: float) -> np.ndarray:
        """bool [n]: rows whose log p(x) is below `threshold`. NaN-safe: a row whose density is not a number (far
        outside anything seen) is flagged, never passed."""
        return ~(self.log_density >= threshold)
