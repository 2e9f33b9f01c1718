"""Export a trained model: one ONNX graph per capability, one TorchScript module, each checked against eager.

Graph I/O follows docs/model_store.md: sample(noise..., label) -> rows; log_prob(rows, noise...) ->
(log_prob, log_prob_cond, posterior); encode(rows, label, noise...) -> latent. Parity is checked with ONNX
Runtime and the TorchScript module on fresh random inputs at batch sizes 1, 7 and 1024; a failure raises.

Two ONNX exporters: `dynamo` (torch.export; the default, smaller and faster graphs) and `torchscript` (the
tracing exporter, about 4x quicker to export, for callers that train many models, e.g. the quality
benchmark). The tracing exporter drops graph inputs a model does not use (a GAN's encode label); such a graph
is exported with dynamo instead, so every graph keeps the inputs its spec names.
"""

from __future__ import annotations

import contextlib
import copy
import io
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import Tensor, nn

from synthserve.contract import GraphSpec, Schema, TensorSpec
from training.models import GenerativeModel

__all__ = [
    "GRAPH_OUTPUTS",
    "ONNX_EXPORTERS",
    "PARITY_BATCHES",
    "ExportError",
    "GraphModule",
    "export_graphs",
    "graph_specs",
]

OPSET = 18
ONNX_EXPORTERS = ("dynamo", "torchscript")
PARITY_BATCHES = (1, 7, 1024)
PARITY_RELATIVE_RMS = 1e-4
# Discrete outputs (floor / argmax) may flip where float32 rounding moves a value across a boundary.
MAX_DISCRETE_FLIP_FRACTION = 0.01
SMALL_BATCH = 64
GRAPH_OUTPUTS = {"sample": ("rows",), "log_prob": ("log_prob", "log_prob_cond", "posterior"), "encode": ("latent",)}


class ExportError(RuntimeError):
    """The exported graphs do not reproduce the eager model."""


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

    specs = {
        "sample": GraphSpec(
            "sample.onnx", (*noise("sample"), *label), (TensorSpec("rows", "float32", (None, width), "output"),)
        ),
        "log_prob": GraphSpec(
            "log_prob.onnx",
            (rows, *noise("log_prob")),
            (
                TensorSpec("log_prob", "float32", (None,), "output"),
                TensorSpec("log_prob_cond", "float32", (None, n_classes), "output"),
                TensorSpec("posterior", "float32", (None, n_classes), "output"),
            ),
        ),
        "encode": GraphSpec(
            "encode.onnx",
            (rows, *label, *noise("encode")),
            (TensorSpec("latent", "float32", (None, model.latent_width()), "output"),),
        ),
    }
    return {name: specs[name] for name in model.capabilities()}


def _call(model: GenerativeModel, graph: str, conditional: bool, inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """Positional graph inputs (manifest order) -> tuple of outputs."""
    if graph == "sample":
        noise = list(inputs[:-1]) if conditional else list(inputs)
        label = inputs[-1] if conditional else torch.zeros(inputs[0].shape[0], dtype=torch.long)
        return (model.sample(noise, label),)
    if graph == "log_prob":
        return model.density(inputs[0], list(inputs[1:]))
    rows = inputs[0]
    label = inputs[1] if conditional else torch.zeros(rows.shape[0], dtype=torch.long)
    return (model.encode(rows, label, list(inputs[2:] if conditional else inputs[1:])),)


class GraphModule(nn.Module):
    """One graph as `forward`, for the ONNX exporter."""

    def __init__(self, model: GenerativeModel, graph: str) -> None:
        super().__init__()
        self.model = model
        self.graph = graph

    def forward(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        return _call(self.model, self.graph, self.model.conditional, inputs)


class TorchScriptGraphs(nn.Module):
    """All graphs as methods of one module, so TorchScript stores the weights once."""

    def __init__(self, model: GenerativeModel) -> None:
        super().__init__()
        self.model = model

    def sample(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        return _call(self.model, "sample", self.model.conditional, inputs)

    def log_prob(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        return _call(self.model, "log_prob", self.model.conditional, inputs)

    def encode(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        return _call(self.model, "encode", self.model.conditional, inputs)


def _random_inputs(
    model: GenerativeModel, spec: GraphSpec, batch: int, generator: torch.Generator
) -> tuple[Tensor, ...]:
    """Fresh inputs: noise from its distribution, random classes, rows drawn from the model itself (valid codes)."""
    out = []
    for t in spec.inputs:
        shape = (batch, *t.row_shape)
        if t.role == "noise":
            if t.distribution == "normal":
                out.append(torch.randn(shape, generator=generator))
            else:
                out.append(torch.rand(shape, generator=generator).clamp(2.0**-24, 1 - 2.0**-24))
        elif t.role == "label":
            out.append(torch.randint(0, model.n_classes, (batch,), generator=generator))
        else:
            labels = torch.randint(0, model.n_classes, (batch,), generator=generator)
            noise = [
                torch.randn((batch, *n.row_shape), generator=generator)
                if n.distribution == "normal"
                else torch.rand((batch, *n.row_shape), generator=generator).clamp(2.0**-24, 1 - 2.0**-24)
                for n in model.noise_inputs("sample")
            ]
            with torch.no_grad():
                out.append(model.sample(noise, labels))
    return tuple(out)


def _compare(
    graph: str, output: str, expected: np.ndarray, actual: np.ndarray, discrete_columns: np.ndarray, what: str
) -> dict[str, float]:
    """Per-column relative RMS < 1e-4 (+ a loose per-element bound); discrete row columns may flip rarely."""
    expected = expected.reshape(len(expected), -1).astype(np.float64)
    actual = actual.reshape(len(actual), -1).astype(np.float64)
    if expected.shape != actual.shape:
        raise ExportError(f"{what} {graph}.{output}: shape {actual.shape} != eager {expected.shape}")
    if not np.isfinite(actual).all() and not np.array_equal(np.isfinite(actual), np.isfinite(expected)):
        raise ExportError(f"{what} {graph}.{output}: non-finite values where eager has finite ones")
    # Log-densities and probabilities are compared on a scale of at least 1 (nats / probability).
    floor = 1.0 if graph == "log_prob" else 1e-6
    diff = np.abs(actual - expected)
    discrete = discrete_columns if output == "rows" else np.zeros(expected.shape[1], dtype=bool)
    flips = float((diff[:, discrete] > 0.5).mean()) if discrete.any() else 0.0
    cont = ~discrete
    # A column's scale is its RMS, but never below 1% of the whole output's RMS: a near-zero column would
    # otherwise turn float32 rounding of the larger columns into a huge ratio. Below 64 rows a column's RMS
    # is no statistic (one row at batch 1), so small batches are scaled by the whole output's RMS.
    overall = float(np.sqrt((expected[:, cont] ** 2).mean())) if cont.any() else 0.0
    column_rms = np.sqrt((expected[:, cont] ** 2).mean(0)) if len(expected) >= SMALL_BATCH else overall
    scale = column_rms + max(floor, 1e-2 * overall)
    rel_rms = np.sqrt((diff[:, cont] ** 2).mean(0)) / scale if cont.any() else np.zeros(1)
    element = (diff[:, cont] / (scale + np.abs(expected[:, cont]))).max() if cont.any() else 0.0
    worst = float(rel_rms.max()) if rel_rms.size else 0.0
    if worst >= PARITY_RELATIVE_RMS or element >= 1e-2 or flips > MAX_DISCRETE_FLIP_FRACTION:
        raise ExportError(
            f"{what} parity failed for {graph}.{output} at batch {len(expected)}: per-column relative RMS "
            f"{worst:.2e} (limit {PARITY_RELATIVE_RMS:.0e}), worst element {element:.2e} (limit 1e-2), "
            f"discrete flips {flips:.4f} (limit {MAX_DISCRETE_FLIP_FRACTION})"
        )
    return {"relative_rms": worst, "discrete_flips": flips}


def _export_onnx(module: GraphModule, spec: GraphSpec, example: tuple[Tensor, ...], path: Path, exporter: str) -> str:
    """Write the graph to `path`; returns the exporter that wrote it."""
    if exporter == "torchscript":
        _export_onnx_tracing(module, spec, example, path)
        if [i.name for i in onnx.load(str(path)).graph.input] == [t.name for t in spec.inputs]:
            _strip_debug_info(path)
            return "torchscript"
    _export_onnx_dynamo(module, spec, example, path)
    _strip_debug_info(path)
    return "dynamo"


def _export_onnx_dynamo(module: GraphModule, spec: GraphSpec, example: tuple[Tensor, ...], path: Path) -> None:
    batch = torch.export.Dim("batch", min=1, max=1 << 24)
    dynamic = (tuple({0: batch} for _ in spec.inputs),)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module,
            example,
            input_names=[t.name for t in spec.inputs],
            output_names=[t.name for t in spec.outputs],
            dynamic_shapes=dynamic,
            dynamo=True,
            opset_version=OPSET,
            verbose=False,
        )
    assert program is not None
    program.save(str(path))


def _export_onnx_tracing(module: GraphModule, spec: GraphSpec, example: tuple[Tensor, ...], path: Path) -> None:
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            example,
            str(path),
            input_names=[t.name for t in spec.inputs],
            output_names=[t.name for t in spec.outputs],
            dynamic_axes={t.name: {0: "batch"} for t in (*spec.inputs, *spec.outputs)},
            dynamo=False,
            opset_version=OPSET,
        )


def _strip_debug_info(path: Path) -> None:
    """Drop per-node stack-trace metadata and shape annotations: they nearly double the file, ORT ignores them."""
    proto = onnx.load(str(path))
    for node in proto.graph.node:
        del node.metadata_props[:]
    del proto.graph.value_info[:]
    onnx.save(proto, str(path))


def export_graphs(
    model: GenerativeModel, schema: Schema, directory: Path, seed: int = 0, exporter: str = "dynamo"
) -> dict[str, object]:
    """Write `<graph>.onnx` and `model.pt` into `directory` and check both against eager; returns parity figures
    and the ONNX exporter that wrote each graph."""
    if exporter not in ONNX_EXPORTERS:
        raise ValueError(f"exporter must be one of {ONNX_EXPORTERS}, got {exporter!r}")
    model = model.cpu().eval()
    specs = graph_specs(model, schema)
    generator = torch.Generator().manual_seed(seed)
    discrete = np.array([c.kind != "continuous" for c in schema.columns])
    parity: dict[str, object] = {}
    exporters: dict[str, str] = {}
    traced_examples = {}
    for name, spec in specs.items():
        module = GraphModule(model, name).eval()
        example = _random_inputs(model, spec, 7, generator)
        traced_examples[name] = example
        path = directory / spec.file
        exporters[name] = _export_onnx(module, spec, example, path, exporter)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        for batch in PARITY_BATCHES:
            inputs = _random_inputs(model, spec, batch, generator)
            with torch.no_grad():
                eager = [t.numpy() for t in module(*inputs)]
            feeds = {t.name: x.numpy() for t, x in zip(spec.inputs, inputs)}
            try:
                onnx_out = session.run([t.name for t in spec.outputs], feeds)
            except Exception as exc:
                raise ExportError(f"ONNX Runtime cannot run the exported {name} graph at batch {batch}: {exc}") from exc
            for t, e, a in zip(spec.outputs, eager, onnx_out):
                parity[f"onnx.{name}.{t.name}.batch{batch}"] = _compare(name, t.name, e, a, discrete, "ONNX")
    scripted = _export_torchscript(model, traced_examples, directory / "model.pt")
    for name, spec in specs.items():
        for batch in PARITY_BATCHES:
            inputs = _random_inputs(model, spec, batch, generator)
            with torch.no_grad():
                eager = [t.numpy() for t in GraphModule(model, name)(*inputs)]
                script_out = [t.numpy() for t in getattr(scripted, name)(*inputs)]
            for t, e, a in zip(spec.outputs, eager, script_out):
                parity[f"torchscript.{name}.{t.name}.batch{batch}"] = _compare(
                    name, t.name, e, a, discrete, "TorchScript"
                )
    worst = max(float(v["relative_rms"]) for v in parity.values())  # type: ignore[index]
    flips = max(float(v["discrete_flips"]) for v in parity.values())  # type: ignore[index]
    return {
        "worst_relative_rms": worst,
        "worst_discrete_flip_fraction": flips,
        "batches": list(PARITY_BATCHES),
        "onnx_exporters": exporters,
    }


def _export_torchscript(
    model: GenerativeModel, examples: dict[str, tuple[Tensor, ...]], path: Path
) -> torch.jit.ScriptModule:
    # A frozen copy: callers of the TorchScript module get plain tensors, not autograd graphs.
    module = TorchScriptGraphs(copy.deepcopy(model).requires_grad_(False)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace_module(module, examples, check_trace=False)
    traced.save(str(path))
    return torch.jit.load(str(path))
