"""Export a trained model: one ONNX graph per capability and one TorchScript module, each checked against eager.

What each graph takes and returns is `training.graphs`; the check is `training.parity`.
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

import onnx
import torch
from torch import Tensor, nn

from synthserve.contract import GraphSpec, Schema
from training.graphs import GraphModule, graph_specs, random_inputs, run_graph
from training.models import GenerativeModel
from training.parity import check_parity

__all__ = ["ONNX_EXPORTERS", "OPSET", "export_graphs"]

OPSET = 18
ONNX_EXPORTERS = ("dynamo", "torchscript")


class TorchScriptGraphs(nn.Module):
    """All graphs as methods of one module, so TorchScript stores the weights once."""

    def __init__(self, model: GenerativeModel) -> None:
        super().__init__()
        self.model = model

    def sample(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        return run_graph(self.model, "sample", inputs)

    def sample_guided(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        return run_graph(self.model, "sample_guided", inputs)

    def log_prob(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        return run_graph(self.model, "log_prob", inputs)

    def encode(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        return run_graph(self.model, "encode", inputs)


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
    """Write `<graph>.onnx` and `model.pt` into `directory` and check both against eager (`check_parity`); returns
    the parity figures and the ONNX exporter that wrote each graph."""
    if exporter not in ONNX_EXPORTERS:
        raise ValueError(f"exporter must be one of {ONNX_EXPORTERS}, got {exporter!r}")
    model = model.cpu().eval()
    generator = torch.Generator().manual_seed(seed)
    exporters: dict[str, str] = {}
    traced_examples = {}
    for name, spec in graph_specs(model, schema).items():
        example = random_inputs(model, spec, 7, generator)
        traced_examples[name] = example
        exporters[name] = _export_onnx(GraphModule(model, name).eval(), spec, example, directory / spec.file, exporter)
    _export_torchscript(model, traced_examples, directory / "model.pt")
    return {**check_parity(model, schema, directory, seed=seed, exporters=exporters), "onnx_exporters": exporters}


def _export_torchscript(model: GenerativeModel, examples: dict[str, tuple[Tensor, ...]], path: Path) -> None:
    # A frozen copy: callers of the TorchScript module get plain tensors, not autograd graphs.
    module = TorchScriptGraphs(copy.deepcopy(model).requires_grad_(False)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace_module(module, examples, check_trace=False)
    traced.save(str(path))
