"""One exported model version run with ONNX Runtime under synthserve's seed semantics.

Rows depend only on (model version, seed, class labels, row index within the request), as in the gRPC
server: noise input `j` of a graph (manifest order) draws `draw_noise(seed, stream=j, start_row=0..n-1)`
(`synthserve.contract.noise_feeds`), and labels follow docs/model_store.md (one label for every row, or exact
counts by largest remainder with the rows ordered by class index; no condition means the training priors).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synthserve.contract import (
    PLAIN_SAMPLING,
    FileCheckError,
    Manifest,
    ManifestError,
    SamplingOptions,
    largest_remainder,
    load_manifest,
    noise_feeds,
    sample_rows,
    verify_files,
)
from torchserve_handler.errors import ArtifactError, InvalidRequest

__all__ = ["SERVED_GRAPHS", "ExportedModel", "Scores", "verify_graph_files"]

# The handler serves sampling and density; `encode` stays a gRPC-server feature.
SERVED_GRAPHS = ("sample", "log_prob")


def verify_graph_files(directory: Path, manifest: Manifest) -> list[str]:
    """Check every graph file against `manifest.files`; returns the file names, in capability order."""
    names = [manifest.graphs[graph].file for graph in manifest.capabilities]
    try:
        verify_files(directory, manifest.files, names)
    except FileCheckError as exc:
        raise ArtifactError(str(exc)) from exc
    return names


@dataclass(frozen=True)
class Scores:
    log_density: np.ndarray  # [n] log p(x)
    class_log_density: np.ndarray  # [n, C] log p(x|c)
    posterior: np.ndarray  # [n, C] p(c|x)


class ExportedModel:
    """A verified model version directory with one ONNX Runtime session per served graph."""

    def __init__(self, directory: Path, *, intra_op_threads: int = 1) -> None:
        # Imported here: the archive builder uses this module's checksum helpers and needs no runtime.
        import onnxruntime as ort

        try:
            self.manifest = load_manifest(directory)
        except ManifestError as exc:
            raise ArtifactError(str(exc)) from exc
        verify_graph_files(directory, self.manifest)
        ort.disable_telemetry_events()
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self._sessions = {
            graph: ort.InferenceSession(
                str(directory / spec.file), sess_options=options, providers=["CPUExecutionProvider"]
            )
            for graph, spec in self.manifest.graphs.items()
            if graph in SERVED_GRAPHS
        }
        for graph, session in self._sessions.items():
            declared = sorted(t.name for t in self.manifest.graphs[graph].inputs)
            actual = sorted(i.name for i in session.get_inputs())
            if declared != actual:
                raise ArtifactError(f"graphs.{graph}: ONNX inputs {actual} differ from the manifest's {declared}")

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> int:
        return self.manifest.version

    def class_index(self, label: str, field: str) -> int:
        """Index of a class given as text (`str()` of the class label, as the gRPC API takes it)."""
        spec = self.manifest.schema.label
        if spec is None:
            raise InvalidRequest(f"{field}: model {self.name!r} is unconditional and takes no class labels")
        for index, value in enumerate(spec.classes):
            if str(value) == label:
                return index
        raise InvalidRequest(f"{field}: unknown class label {label!r} (classes: {[str(c) for c in spec.classes]})")

    def plan_labels(self, n_rows: int, label: str | None, proportions: Mapping[str, float] | None) -> np.ndarray | None:
        """Class index per row (int64 [n]), or None for an unconditional model."""
        spec = self.manifest.schema.label
        if spec is None:
            if label is not None or proportions is not None:
                raise InvalidRequest(f"label/proportions: model {self.name!r} is unconditional")
            return None
        if label is not None:
            return np.full(n_rows, self.class_index(label, "label"), dtype=np.int64)
        weights = np.asarray(spec.priors, dtype=np.float64)
        if proportions is not None:
            weights = np.zeros(len(spec.classes))
            for key, weight in proportions.items():
                if not math.isfinite(weight) or weight < 0:
                    raise InvalidRequest(f"proportions[{key!r}] must be a finite number >= 0, got {weight}")
                weights[self.class_index(key, "proportions")] = weight
            if weights.sum() <= 0:
                raise InvalidRequest("proportions must have a positive sum")
        counts = largest_remainder(n_rows, weights.tolist())
        return np.repeat(np.arange(len(counts), dtype=np.int64), counts)

    def sample(
        self, n_rows: int, seed: int, labels: np.ndarray | None, options: SamplingOptions = PLAIN_SAMPLING
    ) -> np.ndarray:
        """Rows 0..n_rows-1 of the request under `seed` and the sampling options: float32 [n, D] in graph units
        and codes, the gRPC server's rows (synthserve.contract.sample_rows)."""
        if options.best_of > 1 and (labels is None or "log_prob" not in self._sessions):
            raise InvalidRequest(
                f"best_of {options.best_of}: model {self.name!r} ({self.manifest.family}) has no class posterior"
            )
        return sample_rows(self.manifest.graphs, self._run, seed, labels, n_rows, options)

    def score(self, rows: np.ndarray, seed: int) -> Scores:
        """log p(x), log p(x|c) and p(c|x) for float32 rows [n, D]; `seed` feeds the graph's noise, if any."""
        spec = self.manifest.graphs.get("log_prob")
        if spec is None:
            raise InvalidRequest(
                f"rows: model {self.name!r} ({self.manifest.family}) has no density "
                f"(capabilities: {list(self.manifest.capabilities)})"
            )
        feeds = noise_feeds(spec, seed, 0, len(rows))
        rows_input = spec.input_named("rows")
        assert rows_input is not None, "a log_prob graph takes rows"
        feeds[rows_input] = rows
        outputs = dict(zip((t.name for t in spec.outputs), self._run("log_prob", feeds)))
        return Scores(
            log_density=outputs["log_prob"].reshape(-1),
            class_log_density=outputs["log_prob_cond"],
            posterior=outputs["posterior"],
        )

    def _run(self, graph: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        names = [t.name for t in self.manifest.graphs[graph].outputs]
        return list(self._sessions[graph].run(names, feeds))
