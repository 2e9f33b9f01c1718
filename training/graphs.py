"""The graphs a trained model exports: what each takes and returns, and the modules the exporters trace.

Graph I/O follows docs/model_store.md: sample(noise..., label) -> rows; sample_guided(noise..., label, guidance)
-> rows (the sample graph's noise; guidance [B] the weight per row); log_prob(rows, noise...) -> (log_prob,
log_prob_cond, posterior[, anomaly_score][, class_margin]); encode(rows, label, noise...) -> latent. The output
names and their order are the contract's (`synthserve.contract.graphs.GRAPH_OUTPUTS`): serving reads outputs by those
names.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from synthserve.contract import GraphSpec, Schema, TensorSpec
from synthserve.contract.graphs import (
    ANOMALY_SCORE,
    CLASS_LOG_DENSITY,
    CLASS_MARGIN,
    GRAPH_OUTPUTS,
    LATENT,
    LOG_DENSITY,
    POSTERIOR,
    ROWS,
)
from training.anomaly import ANOMALY_NEIGHBORS
from training.models import GenerativeModel

__all__ = ["GraphModule", "eager_log_density", "graph_specs", "random_inputs", "run_graph"]


def graph_specs(model: GenerativeModel, schema: Schema) -> dict[str, GraphSpec]:
    """The manifest's description of each graph, inputs in call order."""
    width, n_classes = schema.width, schema.n_classes
    rows = TensorSpec("rows", "float32", (None, width), "rows")
    label = (TensorSpec("label", "int64", (None,), "label"),) if model.conditional else ()

    def noise(graph: str) -> tuple[TensorSpec, ...]:
        return tuple(
            TensorSpec(n.name, "float32", (None, *n.row_shape), "noise", n.distribution)
            for n in model.noise_inputs(graph)
        )

    def shape(output: str) -> tuple[int | None, ...]:
        if output == LATENT:  # asked only of a model that encodes
            return (None, model.latent_width())
        shapes: dict[str, tuple[int | None, ...]] = {
            ROWS: (None, width),
            LOG_DENSITY: (None,),
            ANOMALY_SCORE: (None,),
            CLASS_LOG_DENSITY: (None, n_classes),
            CLASS_MARGIN: (None, n_classes),
            POSTERIOR: (None, n_classes),
        }
        return shapes[output]

    def outputs(graph: str) -> tuple[TensorSpec, ...]:
        optional = {ANOMALY_SCORE: model.anomaly is not None, CLASS_MARGIN: _has_class_margin(model)}
        names = [n for n in GRAPH_OUTPUTS[graph] if optional.get(n, True)]
        return tuple(TensorSpec(name, "float32", shape(name), "output") for name in names)

    guidance = TensorSpec("guidance", "float32", (None,), "guidance")
    inputs = {
        "sample": (*noise("sample"), *label),
        "sample_guided": (*noise("sample_guided"), *label, guidance),
        "log_prob": (rows, *noise("log_prob")),
        "encode": (rows, *label, *noise("encode")),
    }
    return {name: GraphSpec(f"{name}.onnx", inputs[name], outputs(name)) for name in model.capabilities()}


def run_graph(model: GenerativeModel, graph: str, inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """Positional graph inputs (manifest order) -> tuple of outputs (GRAPH_OUTPUTS order)."""
    conditional = model.conditional
    if graph == "sample":
        noise = list(inputs[:-1]) if conditional else list(inputs)
        label = inputs[-1] if conditional else torch.zeros(inputs[0].shape[0], dtype=torch.long)
        return (model.sample(noise, label),)
    if graph == "sample_guided":  # only conditional models guide
        return (model.sample_guided(list(inputs[:-2]), inputs[-2], inputs[-1]),)
    if graph == "log_prob":
        scores = model.density(inputs[0], list(inputs[1:]))
        return (*scores, *_reference_outputs(model, inputs[0], scores[0]))
    rows = inputs[0]
    label = inputs[1] if conditional else torch.zeros(rows.shape[0], dtype=torch.long)
    return (model.encode(rows, label, list(inputs[2:] if conditional else inputs[1:])),)


def _has_class_margin(model: GenerativeModel) -> bool:
    return model.neighbors is not None and model.n_classes > 1


def _reference_outputs(model: GenerativeModel, rows: Tensor, log_prob: Tensor) -> tuple[Tensor, ...]:
    """What log_prob computes from the training rows it holds (training/neighbors.py), from one distance pass:
    the anomaly score and, for two or more classes, the class margin."""
    if model.neighbors is None:
        return ()
    nearest = model.neighbors.nearest(rows, ANOMALY_NEIGHBORS if model.anomaly is not None else 1)
    outputs = []
    if model.anomaly is not None:
        outputs.append(model.anomaly(log_prob, model.neighbors.mean_nearest(nearest, ANOMALY_NEIGHBORS)))
    if _has_class_margin(model):
        outputs.append(model.neighbors.class_margin(nearest))
    return tuple(outputs)


class GraphModule(nn.Module):
    """One graph as `forward`, for the ONNX exporter."""

    def __init__(self, model: GenerativeModel, graph: str) -> None:
        super().__init__()
        self.model = model
        self.graph = graph

    def forward(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        return run_graph(self.model, self.graph, inputs)


def random_inputs(
    model: GenerativeModel, spec: GraphSpec, batch: int, generator: torch.Generator
) -> tuple[Tensor, ...]:
    """Fresh inputs: noise from its distribution, random classes, rows drawn from the model itself (valid codes)."""
    out = []
    for t in spec.inputs:
        if t.role == "noise":
            out.append(_noise((batch, *t.row_shape), t.distribution, generator))
        elif t.role == "label":
            out.append(torch.randint(0, model.n_classes, (batch,), generator=generator))
        elif t.role == "guidance":  # weights across the served range's usual part, [0, 4)
            out.append(4.0 * torch.rand((batch,), generator=generator))
        else:
            labels = torch.randint(0, model.n_classes, (batch,), generator=generator)
            noise = [_noise((batch, *n.row_shape), n.distribution, generator) for n in model.noise_inputs("sample")]
            with torch.no_grad():
                out.append(model.sample(noise, labels))
    return tuple(out)


def eager_log_density(model: GenerativeModel, rows: np.ndarray, seed: int, chunk_rows: int = 4096) -> np.ndarray:
    """log p(x) [N] of float32 rows [N, D] (graph units) from the eager model, its scoring noise drawn from `seed`."""
    model.eval()
    device = model.log_priors.device
    generator = torch.Generator().manual_seed(seed)
    out = []
    with torch.no_grad():
        for start in range(0, len(rows), chunk_rows):
            chunk = torch.from_numpy(np.ascontiguousarray(rows[start : start + chunk_rows], dtype=np.float32))
            noise = [
                _noise((len(chunk), *n.row_shape), n.distribution, generator).to(device)
                for n in model.noise_inputs("log_prob")
            ]
            log_prob, _, _ = model.density(chunk.to(device), noise)
            out.append(log_prob.cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def _noise(shape: tuple[int, ...], distribution: str | None, generator: torch.Generator) -> Tensor:
    """Standard normal, or uniform kept inside (0, 1) as the contract's noise is."""
    if distribution == "normal":
        return torch.randn(shape, generator=generator)
    return torch.rand(shape, generator=generator).clamp(2.0**-24, 1 - 2.0**-24)
