"""Sampling options on top of the noise rule: a temperature, best-of-k selection by the model's class margin (or
its posterior), and a classifier-free guidance weight.

- **temperature** `T` (`0 < T <= MAX_TEMPERATURE`): every `normal` noise input of the sample graph is multiplied
  by `T` (uniform inputs, e.g. Gumbel noise for categories, are left alone). `T < 1` draws rows nearer the
  model's modes; `T = 1` is plain sampling.
- **best_of** `k` (`1 <= k <= MAX_BEST_OF`): output row `i` is chosen among `k` candidates, the sample graph's
  rows `i*k .. i*k + k - 1` (plain rows at those indices, same label, same temperature). The model's own
  `log_prob` graph scores them, and the candidate with the highest class margin for `label_i` wins
  (`best_candidates`: ties go to the highest posterior `p(label_i | x)`, then the first; graphs without a margin
  rank by the posterior alone). Scoring noise (the VAE's importance samples) for candidate `c` is row `c` of noise
  stream `SCORING_STREAM_OFFSET + j`. `k = 1` is plain sampling and needs no `log_prob` graph.
- **guidance** `w` (`0 <= w <= MAX_GUIDANCE`): classifier-free guidance for models that export a `sample_guided`
  graph (conditional diffusion): the velocity v_null + w (v_c - v_null), `w` fed per row as the graph's
  `guidance` input, its noise inputs the `sample` graph's (same seed, same x0: only w moves the rows). `w = 1` is
  the plain conditional model, computed by the `sample` graph (half the network evaluations), `w = 0` the
  unconditional one; `w > 1` pushes rows towards what tells their class apart.

Row `i` therefore still depends only on (version, seed, label, row index, T, k, w), so batching, chunking and
streaming cannot change it. The server applies these options; offline users of the exported graphs call the
same functions, so that both produce the same rows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from synthserve.contract.errors import RequestError, UnsupportedRequest
from synthserve.contract.graphs import CLASS_MARGIN, POSTERIOR, named_outputs
from synthserve.contract.manifest import GraphSpec, Manifest
from synthserve.contract.noise import draw_noise

__all__ = [
    "BALANCE_SAMPLING",
    "MAX_BEST_OF",
    "MAX_GUIDANCE",
    "MAX_TEMPERATURE",
    "PLAIN_SAMPLING",
    "SCORING_STREAM_OFFSET",
    "SamplingOptions",
    "best_candidates",
    "has_class_posterior",
    "noise_feeds",
    "resolve_sampling",
    "sample_feeds",
    "sample_rows",
    "selects_by_posterior",
]

MAX_TEMPERATURE = 4.0
MAX_BEST_OF = 64
MAX_GUIDANCE = 10.0
GUIDED_GRAPH = "sample_guided"
SCORING_STREAM_OFFSET = 1 << 16


@dataclass(frozen=True)
class SamplingOptions:
    temperature: float = 1.0
    best_of: int = 1
    guidance: float = 1.0  # 1: the plain conditional model

    def __post_init__(self) -> None:
        if not 0.0 < self.temperature <= MAX_TEMPERATURE:
            raise ValueError(f"temperature must be in (0, {MAX_TEMPERATURE}], got {self.temperature}")
        if not 1 <= self.best_of <= MAX_BEST_OF:
            raise ValueError(f"best_of must be in [1, {MAX_BEST_OF}], got {self.best_of}")
        if not 0.0 <= self.guidance <= MAX_GUIDANCE:
            raise ValueError(f"guidance must be in [0, {MAX_GUIDANCE}], got {self.guidance}")

    @property
    def graph(self) -> str:
        """The graph that draws the candidate rows: `sample`, or `sample_guided` for a guidance weight other than 1."""
        return "sample" if self.guidance == 1.0 else GUIDED_GRAPH


PLAIN_SAMPLING = SamplingOptions()  # temperature 1, best of 1, guidance 1: plain sampling
# What the server's Balance uses when a request leaves the options out: best of 8 by the class margin (by the
# posterior on graphs without one), chosen on the quality benchmark's development datasets (docs/quality.md,
# "Balance by class margin"), which measures it by this name.
BALANCE_SAMPLING = SamplingOptions(temperature=1.0, best_of=8)


def noise_feeds(
    spec: GraphSpec, seed: int, start_row: int, n_rows: int, temperature: float = 1.0, stream_offset: int = 0
) -> dict[str, np.ndarray]:
    """Noise inputs of `spec` for rows [start_row, start_row + n_rows): stream `stream_offset + j` for input j,
    normal inputs scaled by `temperature`."""
    feeds = {}
    for j, tensor in enumerate(spec.noise_inputs):
        distribution = str(tensor.distribution)
        noise = draw_noise(seed, stream_offset + j, start_row, n_rows, tensor.row_shape, distribution)
        if distribution == "normal" and temperature != 1.0:
            noise *= np.float32(temperature)
        feeds[tensor.name] = noise
    return feeds


def sample_feeds(
    spec: GraphSpec, seed: int, start_row: int, n_rows: int, options: SamplingOptions, labels: np.ndarray | None
) -> dict[str, np.ndarray]:
    """Inputs of a sample graph for candidate rows [start_row, start_row + n_rows): the noise (normal inputs scaled
    by the temperature), `labels` (the class index per row, where the graph takes one) and the guidance weight."""
    feeds = noise_feeds(spec, seed, start_row, n_rows, options.temperature)
    label_input = spec.input_named("label")
    if label_input is not None and labels is not None:
        feeds[label_input] = labels
    guidance_input = spec.input_named("guidance")
    if guidance_input is not None:
        feeds[guidance_input] = np.full(n_rows, options.guidance, dtype=np.float32)
    return feeds


def has_class_posterior(graphs: Mapping[str, GraphSpec]) -> bool:
    """Whether the graphs can rank best-of-k candidates: a `log_prob` graph with a `posterior` output."""
    scoring = graphs.get("log_prob")
    return scoring is not None and scoring.has_output(POSTERIOR)


def selects_by_posterior(manifest: Manifest) -> bool:
    """Whether best_of > 1 applies: a conditional model with a class posterior."""
    return manifest.schema.label is not None and has_class_posterior(manifest.graphs)


def resolve_sampling(
    manifest: Manifest,
    temperature: float | None,
    best_of: int | None,
    defaults: SamplingOptions = PLAIN_SAMPLING,
    guidance: float | None = None,
) -> SamplingOptions:
    """A request's options: absent fields from `defaults` (a default best_of becomes 1 for a model that cannot
    select, a default guidance 1 for a model without a guided graph); RequestError naming `sampling.<field>` and
    its bounds, UnsupportedRequest for best_of > 1 on a model without a class posterior or a guidance weight on a
    model without a `sample_guided` graph."""
    can_select = selects_by_posterior(manifest)
    can_guide = GUIDED_GRAPH in manifest.graphs
    if (
        temperature is None
        and best_of is None
        and guidance is None
        and (can_select or defaults.best_of == 1)
        and (can_guide or defaults.guidance == 1.0)
    ):
        return defaults  # the common request: no options given, no new object
    try:
        options = SamplingOptions(
            defaults.temperature if temperature is None else temperature,
            (defaults.best_of if can_select else 1) if best_of is None else best_of,
            (defaults.guidance if can_guide else 1.0) if guidance is None else guidance,
        )
    except ValueError as exc:
        raise RequestError(f"sampling.{exc}") from None
    if options.best_of > 1 and not can_select:
        raise UnsupportedRequest(
            f"sampling.best_of {best_of}: model {manifest.name!r} ({manifest.family}) has no class posterior "
            "to choose by (needs a conditional model with a log_prob graph)"
        )
    if options.guidance != 1.0 and not can_guide:
        raise UnsupportedRequest(
            f"sampling.guidance {guidance:g}: model {manifest.name!r} ({manifest.family}) has no classifier-free "
            f"guidance (needs a conditional model with a {GUIDED_GRAPH} graph: the diffusion family)"
        )
    return options


def best_candidates(outputs: Mapping[str, np.ndarray], labels: np.ndarray, best_of: int) -> np.ndarray:
    """Indices into the `len(labels) * best_of` candidates of the winners: per output row, the candidate with the
    highest class margin for its label (`outputs`: the log_prob graph's outputs by name, each `[n * k, C]`), the
    highest posterior among those tied on it (rows that repeat training rows), then the first. Graphs without
    a class margin rank by the posterior alone."""
    n_rows = len(labels)
    candidates, classes = np.arange(n_rows * best_of), np.repeat(labels, best_of)
    posterior = outputs[POSTERIOR][candidates, classes].reshape(n_rows, best_of)
    if CLASS_MARGIN in outputs:
        margin = outputs[CLASS_MARGIN][candidates, classes].reshape(n_rows, best_of)
        posterior = np.where(margin >= margin.max(axis=1, keepdims=True), posterior, -np.inf)
    return np.arange(n_rows) * best_of + posterior.argmax(axis=1)


RunGraph = Callable[[str, dict[str, np.ndarray]], list[np.ndarray]]  # (graph, feeds) -> outputs in spec order


def sample_rows(
    graphs: Mapping[str, GraphSpec],
    run: RunGraph,
    seed: int,
    labels: np.ndarray | None,
    n_rows: int,
    options: SamplingOptions = SamplingOptions(),
    start_row: int = 0,
) -> np.ndarray:
    """Rows start_row..start_row+n_rows-1 of a request in one pass (no batching), for callers that run the graphs
    themselves (the TorchServe handler, the quality benchmark); the gRPC server applies the same rule chunk by
    chunk. `labels`: class index per row, None for an unconditional model."""
    spec = graphs[options.graph]
    k = options.best_of
    if labels is None and spec.input_named("label") is not None:
        raise ValueError("a conditional model needs a class index per row")
    candidate_labels = np.repeat(labels, k) if labels is not None and k > 1 else labels
    first = start_row * k
    (rows,) = run(options.graph, sample_feeds(spec, seed, first, n_rows * k, options, candidate_labels))
    if k == 1:
        return rows
    scoring = graphs.get("log_prob")
    if labels is None or scoring is None or not has_class_posterior(graphs):
        raise ValueError(f"best_of {k} needs a conditional model with a class posterior")
    feeds = noise_feeds(scoring, seed, first, n_rows * k, stream_offset=SCORING_STREAM_OFFSET)
    rows_input = scoring.input_named("rows")
    assert rows_input is not None, "a log_prob graph takes rows"
    feeds[rows_input] = rows
    return rows[best_candidates(named_outputs(scoring, run("log_prob", feeds)), labels, k)]
