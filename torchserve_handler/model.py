"""One exported model version run with ONNX Runtime under synthserve's seed semantics.

Rows depend only on (model version, seed, class labels, row index within the request), as in the gRPC
server: noise input `j` of a graph (manifest order) draws `draw_noise(seed, stream=j, start_row=0..n-1)`
(`synthserve.contract.noise_feeds`), and labels follow docs/model_store.md (one label for every row, or exact
counts by largest remainder with the rows ordered by class index; no condition means the training priors).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from synthserve.contract import (
    PLAIN_SAMPLING,
    FileCheckError,
    Manifest,
    ManifestError,
    SamplingOptions,
    Scores,
    load_manifest,
    noise_feeds,
    plan_labels,
    require_graph,
    resolve_conditions,
    resolve_sampling,
    sample_conditioned_rows,
    sample_rows,
    verify_files,
)
from synthserve.contract.sessions import SignatureError, check_signature, open_session
from torchserve_handler.errors import ArtifactError

__all__ = ["SERVED_GRAPHS", "ExportedModel", "verify_graph_files"]

# The handler serves sampling and density; `encode` stays a gRPC-server feature.
SERVED_GRAPHS = ("sample", "sample_guided", "log_prob")
# Candidates of a conditioned request computed at once, as the gRPC server (its default max_batch_rows): the
# block size changes the work done, never the rows.
CONDITION_BLOCK = 2048


def verify_graph_files(directory: Path, manifest: Manifest) -> list[str]:
    """Check every graph file against `manifest.files`; returns the file names, in capability order."""
    names = [manifest.graphs[graph].file for graph in manifest.capabilities]
    try:
        verify_files(directory, manifest.files, names)
    except FileCheckError as exc:
        raise ArtifactError(str(exc)) from exc
    return names


class ExportedModel:
    """A verified model version directory with one ONNX Runtime session per served graph."""

    def __init__(self, directory: Path, *, intra_op_threads: int = 1) -> None:
        try:
            self.manifest = load_manifest(directory)
        except ManifestError as exc:
            raise ArtifactError(str(exc)) from exc
        verify_graph_files(directory, self.manifest)
        self._sessions = {
            graph: open_session(directory / spec.file, intra_op_threads)
            for graph, spec in self.manifest.graphs.items()
            if graph in SERVED_GRAPHS
        }
        for graph, session in self._sessions.items():
            try:
                check_signature(f"graphs.{graph}", self.manifest.graphs[graph], session)
            except SignatureError as exc:
                raise ArtifactError(str(exc)) from exc

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> int:
        return self.manifest.version

    def plan_labels(self, n_rows: int, label: str | None, proportions: Mapping[str, float] | None) -> np.ndarray | None:
        """Class index per row (int64 [n]), or None for an unconditional model (synthserve.contract.plan_labels)."""
        runs = plan_labels(self.manifest, n_rows, label, proportions)
        return None if runs is None else runs.slice(0, n_rows)

    def sample(
        self, n_rows: int, seed: int, labels: np.ndarray | None, options: SamplingOptions = PLAIN_SAMPLING
    ) -> np.ndarray:
        """Rows 0..n_rows-1 of the request under `seed` and the sampling options: float32 [n, D] in graph units
        and codes, the gRPC server's rows (synthserve.contract.sample_rows)."""
        # best_of > 1 needs a posterior, guidance != 1 a sample_guided graph
        resolve_sampling(self.manifest, options.temperature, options.best_of, guidance=options.guidance)
        return sample_rows(self.manifest.graphs, self._run, seed, labels, n_rows, options)

    def sample_conditioned(
        self,
        n_rows: int,
        seed: int,
        label: str | None,
        proportions: Mapping[str, float] | None,
        conditions: Sequence[Mapping[str, Any]],
        options: SamplingOptions,
        budget: int,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Rows that meet `conditions` and their class indices: the gRPC server's candidate search
        (synthserve.contract.sample_conditioned_rows); RareCondition past `budget` candidates."""
        resolve_sampling(self.manifest, options.temperature, options.best_of, guidance=options.guidance)
        resolved = resolve_conditions(self.manifest, conditions)
        runs = plan_labels(self.manifest, n_rows, label, proportions)
        schema = self.manifest.schema
        return sample_conditioned_rows(
            self.manifest.graphs, self._run, schema, seed, runs, n_rows, resolved, options, budget, CONDITION_BLOCK
        )

    def score(self, rows: np.ndarray, seed: int) -> Scores:
        """log p(x), log p(x|c) and p(c|x) for float32 rows [n, D]; `seed` feeds the graph's noise, if any."""
        spec = require_graph(self.manifest, "log_prob")
        feeds = noise_feeds(spec, seed, 0, len(rows))
        rows_input = spec.input_named("rows")
        assert rows_input is not None, "a log_prob graph takes rows"
        feeds[rows_input] = rows
        return Scores.from_outputs(spec, self._run("log_prob", feeds))

    def _run(self, graph: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        names = [t.name for t in self.manifest.graphs[graph].outputs]
        return list(self._sessions[graph].run(names, feeds))
