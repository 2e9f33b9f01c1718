"""Export a trained model: one ONNX graph per capability, one TorchScript module, each checked against eager.

Graph I/O follows docs/model_store.md: sample(noise..., label) -> rows; log_prob(rows, noise...) ->
(log_prob, log_prob_cond, posterior); encode(rows, label, noise...) -> latent. Parity is checked with ONNX
Runtime and the TorchScript module on fresh random inputs at batch sizes 1, 7 and 1024; a failure raises an
ExportError that says what to do.

Exported graphs never match eager bit for bit (other kernels and summation orders; ONNX Runtime's tanh is a few
ulps off), and how far float32 rounding moves an output depends on the model: a flow whose coupling layers
strongly expand some direction turns one rounding (6e-8) into 1e-4 of its latent or log-density, in eager as
much as in any graph. A fixed tolerance either fails such valid models or misses a wrong graph of a
well-conditioned one, so each output element is measured in units of its own float32 rounding, taken from the
eager model: its float32 error against the same model run in float64 (same float32 weights, knots and inputs),
combined with the spread of NUDGED_COPIES copies whose weights and inputs are one ulp off (one evaluation can be
lucky on a row that amplifies every rounding). A graph passes when its difference from eager float32, in those
units, has an RMS of at most PARITY_ROUNDING_FACTOR per column. A wrong graph (a weight off by a relative d, a
wrong op) moves the outputs through the same Jacobian as a rounding does: about d / 1e-7 units, whatever the
conditioning.

Two ONNX exporters: `dynamo` (torch.export; the default, smaller and faster graphs) and `torchscript` (the
tracing exporter, about 4x quicker to export, for callers that train many models, e.g. the quality
benchmark). The tracing exporter drops graph inputs a model does not use (a GAN's encode label); such a graph
is exported with dynamo instead, so every graph keeps the inputs its spec names.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from synthserve.contract import GraphSpec, Schema, TensorSpec
from training.models import GenerativeModel

__all__ = [
    "GRAPH_OUTPUTS",
    "MAX_DISCRETE_FLIP_FRACTION",
    "ONNX_EXPORTERS",
    "PARITY_BATCHES",
    "PARITY_ROUNDING_FACTOR",
    "ExportError",
    "GraphModule",
    "check_parity",
    "export_graphs",
    "graph_specs",
]

OPSET = 18
ONNX_EXPORTERS = ("dynamo", "torchscript")
PARITY_BATCHES = (1, 7, 1024)
# Valid graphs land at most 3.2 units (RMS) from eager: 22 models (the KEEL tables under the former type
# inference, breast cancer, digits, stress tables; all families), 10-40 parity seeds each. A relative slip of
# 1e-5 in every weight of a trained model shows as 45-120 units.
PARITY_ROUNDING_FACTOR = 16.0
# Copies of the model with every weight one float32 ulp off, run on inputs one ulp off: their spread is how much
# each output element amplifies a rounding.
NUDGED_COPIES = 4
# An element eager happens to compute exactly (a saturated posterior, clipped rows) still allows half an ulp.
ROUNDING_FLOOR = 2.0**-24
# Discrete outputs (floor / argmax, gaps) may flip where float32 rounding moves a value across a boundary.
MAX_DISCRETE_FLIP_FRACTION = 0.01
# Below 64 rows a column's RMS is no statistic (one row at batch 1): small batches pool the columns' ratios.
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


def _widen(value: Any) -> Any:
    """float32 tensors (weights, buffers, inputs, intermediates) and the float32 dtype -> float64."""
    if isinstance(value, Tensor) and value.dtype == torch.float32:
        return value.double()
    if value is torch.float32:
        return torch.float64
    if type(value) in (list, tuple):
        return type(value)(_widen(v) for v in value)
    if isinstance(value, dict):
        return {k: _widen(v) for k, v in value.items()}
    return value


class _Float64(TorchFunctionMode):
    """Runs float32 model code in float64 without touching the model: every op gets its float32 arguments
    widened (float32 values are exact in float64), and `.float()` / dtype=torch.float32 mean float64."""

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        if func is Tensor.float:
            return args[0].double()
        return func(*_widen(args), **_widen(kwargs or {}))


def _float64_outputs(module: nn.Module, inputs: tuple[Tensor, ...]) -> list[np.ndarray]:
    """The graph's outputs in (nearly) exact arithmetic on the float32 model and inputs."""
    with torch.no_grad(), _Float64():
        return [t.double().numpy() for t in module(*inputs)]


def _nudge(values: Tensor, generator: torch.Generator) -> Tensor:
    """Every element one float32 ulp up or down, at random."""
    direction = torch.randint(0, 2, values.shape, generator=generator).to(values.dtype) * 2 - 1
    return torch.nextafter(values, direction * math.inf)


def _nudged_models(model: GenerativeModel, generator: torch.Generator) -> list[GenerativeModel]:
    """NUDGED_COPIES copies of `model`, each weight one ulp off (the feature transform's knots stay exact)."""
    copies = []
    for _ in range(NUDGED_COPIES):
        nudged = copy.deepcopy(model)
        with torch.no_grad():
            for parameter in nudged.parameters():
                parameter.copy_(_nudge(parameter, generator))
        copies.append(nudged)
    return copies


def _nudged_inputs(
    spec: GraphSpec, inputs: tuple[Tensor, ...], continuous: Tensor, generator: torch.Generator
) -> tuple[Tensor, ...]:
    """Continuous row columns and normal noise one ulp off; integers and category codes (compared exactly),
    labels and uniform noise (clamped inside (0, 1)) as they are."""
    nudged = []
    for t, x in zip(spec.inputs, inputs):
        if t.role == "rows":
            x = torch.where(continuous, _nudge(x, generator), x)
        elif t.role == "noise" and t.distribution == "normal":
            x = _nudge(x, generator)
        nudged.append(x)
    return tuple(nudged)


def _columns(values: np.ndarray) -> np.ndarray:
    return values.reshape(len(values), -1).astype(np.float64)


def _rms(values: np.ndarray) -> np.ndarray:
    return np.sqrt((values**2).mean(0))


def _finite_squares(difference: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(difference), difference, 0.0) ** 2


@dataclass(frozen=True)
class _EagerOutput:
    """One output of the eager model on one parity batch, with what float32 rounding does to it.

    values: float32 eager [B, F]; scale: per column [F], its median |value|, never below 1% of the whole output's
    nor, for log-densities and probabilities, below 1 (nats / probability); rounding: per element [B, F], how far
    float32 rounding moves it: eager's own error against float64 combined with the spread of the nudged copies (a
    single evaluation can be lucky on a row that amplifies every rounding), plus ROUNDING_FLOOR of its magnitude.
    """

    values: np.ndarray
    scale: np.ndarray
    rounding: np.ndarray
    own_error: np.ndarray  # per column [F]: RMS |eager - float64| / (scale + |value|), the graph's conditioning

    @classmethod
    def measure(cls, graph: str, values: np.ndarray, reference: np.ndarray, nudged: list[np.ndarray]) -> _EagerOutput:
        """`reference`: the same output in float64; `nudged`: from the nudged copies on nudged inputs."""
        values, reference = _columns(values), _columns(reference)
        absolute = np.where(np.isfinite(reference), np.abs(reference), np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a column of gaps only: an all-NaN median
            column_median = np.nan_to_num(np.nanmedian(absolute, axis=0))
            overall_median = float(np.nan_to_num(np.nanmedian(absolute)))
        scale = np.maximum(column_median, max(1.0 if graph == "log_prob" else 1e-6, 1e-2 * overall_median))
        magnitude = scale + np.nan_to_num(absolute)
        with np.errstate(invalid="ignore"):  # inf - inf: a gap or an overflow on both sides, left out
            own = _finite_squares(reference - values)
            deviations = [_columns(n) - values for n in nudged]
        counts = sum(np.isfinite(d) for d in deviations)
        spread = sum(_finite_squares(d) for d in deviations) / np.maximum(counts, 1)
        rounding = np.sqrt(own + spread) + ROUNDING_FLOOR * magnitude
        return cls(values, scale, rounding, np.sqrt((own / magnitude**2).mean(0)))


def _measure_eager(
    graph: str,
    module: GraphModule,
    nudged: list[GraphModule],
    spec: GraphSpec,
    inputs: tuple[Tensor, ...],
    continuous: Tensor,
    generator: torch.Generator,
) -> list[_EagerOutput]:
    """Eager float32 outputs of one parity batch, each with how far float32 rounding moves it."""
    with torch.no_grad():
        values = [t.numpy() for t in module(*inputs)]
        spread = [[t.numpy() for t in m(*_nudged_inputs(spec, inputs, continuous, generator))] for m in nudged]
    reference = _float64_outputs(module, inputs)
    return [
        _EagerOutput.measure(graph, values[i], reference[i], [outputs[i] for outputs in spread])
        for i in range(len(values))
    ]


def _versions() -> str:
    return f"torch {torch.__version__}, onnx {onnx.__version__}, onnxruntime {ort.__version__}"


def _advice(runtime: str, exporter: str | None) -> str:
    """What a user can do about a parity failure of `runtime` ("onnx" or "torchscript"): short, so that a one-line
    error report keeps it."""
    report = f"report this message with the training command ({_versions()})"
    if runtime == "torchscript":
        return (
            "The TorchScript module (model.pt) does not compute what the model computes (a tracing bug, not the "
            "data; --onnx-exporter does not change it): " + report + "."
        )
    other = "torchscript" if exporter in (None, "dynamo") else "dynamo"
    return (
        f"The ONNX graph does not compute what the model computes (an exporter or ONNX Runtime bug, not the "
        f"data): retry with --onnx-exporter {other}; if that fails too, " + report + "."
    )


def _compare(
    graph: str,
    output: str,
    eager: _EagerOutput,
    actual: np.ndarray,
    discrete_columns: np.ndarray,
    what: str,
    advice: str = "",
) -> dict[str, float]:
    """Exported (`actual`) vs eager float32, each element's difference in units of its float32 rounding.

    Per continuous column, RMS over the rows <= PARITY_ROUNDING_FACTOR; below SMALL_BATCH rows over all columns
    too (one row is no statistic). Comparing with eager float32 rather than float64 keeps a row whose float64
    value falls on the other side of a knot (log|slope| jumps there) from counting as an error. Discrete row
    columns and gaps (NaN) may flip in at most MAX_DISCRETE_FLIP_FRACTION of the rows.
    """
    expected, actual = eager.values, _columns(actual)
    if actual.shape != expected.shape:
        raise ExportError(f"{what} {graph}.{output}: shape {actual.shape} != eager {expected.shape}. {advice}")
    same = (actual == expected) | (np.isnan(actual) & np.isnan(expected))
    with np.errstate(invalid="ignore"):
        diff = np.where(same, 0.0, np.abs(actual - expected))
    unmatched = ~np.isfinite(diff)  # a NaN or infinity on one side only
    discrete = discrete_columns if output == "rows" else np.zeros(expected.shape[1], dtype=bool)
    if unmatched.any() and output != "rows":
        raise ExportError(f"{what} {graph}.{output}: non-finite values where eager has finite ones. {advice}")
    flipped = unmatched | (discrete & (diff > 0.5))
    flips = float(flipped.any(1).mean())
    columns = np.flatnonzero(~discrete)
    diff = np.where(flipped, 0.0, diff)[:, columns]
    per_column = _rms(diff / eager.rounding[:, columns])
    pooled = len(expected) < SMALL_BATCH and columns.size > 0
    ratio = float(np.sqrt((per_column**2).mean())) if pooled else float(per_column.max(initial=0.0))
    relative = _rms(diff / (eager.scale[columns] + np.abs(np.nan_to_num(expected[:, columns]))))
    figures = {
        "rounding_ratio": ratio,
        "relative_rms": float(relative.max(initial=0.0)),
        "eager_rounding": float(eager.own_error[columns].max(initial=0.0)),
        "discrete_flips": flips,
    }
    if ratio > PARITY_ROUNDING_FACTOR or flips > MAX_DISCRETE_FLIP_FRACTION:
        # What failed and the advice first, the details last: a one-line report may cut the end.
        failures = []
        if ratio > PARITY_ROUNDING_FACTOR:
            pooled_note = ", RMS over the columns" if pooled else ""
            failures.append(
                f"{ratio:.1f}x the float32 rounding of eager (limit {PARITY_ROUNDING_FACTOR:g}x{pooled_note})"
            )
        if flips > MAX_DISCRETE_FLIP_FRACTION:
            failures.append(
                f"discrete values or gaps differ in {flips:.4f} of the rows (limit {MAX_DISCRETE_FLIP_FRACTION})"
            )
        details = ""
        if columns.size:
            worst = int(np.argmax(per_column))
            details = (
                f" Worst column {columns[worst]}: relative RMS {relative[worst]:.2e} off eager, whose own float32 "
                f"error is {eager.own_error[columns[worst]]:.2e}."
            )
        raise ExportError(
            f"{what} parity failed for {graph}.{output} at batch {len(expected)}: {'; '.join(failures)}. "
            f"{advice}{details}"
        )
    return figures


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
        example = _random_inputs(model, spec, 7, generator)
        traced_examples[name] = example
        exporters[name] = _export_onnx(GraphModule(model, name).eval(), spec, example, directory / spec.file, exporter)
    _export_torchscript(model, traced_examples, directory / "model.pt")
    return {**check_parity(model, schema, directory, seed=seed, exporters=exporters), "onnx_exporters": exporters}


def check_parity(
    model: GenerativeModel, schema: Schema, directory: Path, seed: int = 0, exporters: dict[str, str] | None = None
) -> dict[str, object]:
    """Compare the graphs in `directory` (ONNX Runtime, and model.pt) with eager `model` on fresh random inputs;
    raises ExportError on a failure. `exporters` (graph -> ONNX exporter) only words the advice of a failure."""
    model = model.cpu().eval()
    generator = torch.Generator().manual_seed(seed + 1)  # not the inputs the graphs were traced with
    nudges = torch.Generator().manual_seed(seed)
    nudged_models = _nudged_models(model, nudges)
    discrete = np.array([c.kind != "continuous" for c in schema.columns])
    continuous = torch.from_numpy(~discrete)
    scripted = torch.jit.load(str(directory / "model.pt"))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    parity: dict[str, dict[str, float]] = {}
    for name, spec in graph_specs(model, schema).items():
        exporter = (exporters or {}).get(name)
        what = {"onnx": f"ONNX ({exporter} exporter)" if exporter else "ONNX", "torchscript": "TorchScript"}
        advice = {runtime: _advice(runtime, exporter) for runtime in what}
        module = GraphModule(model, name).eval()
        nudged_modules = [GraphModule(m, name).eval() for m in nudged_models]
        session = ort.InferenceSession(str(directory / spec.file), options, providers=["CPUExecutionProvider"])
        for batch in PARITY_BATCHES:
            inputs = _random_inputs(model, spec, batch, generator)
            feeds = {t.name: x.numpy() for t, x in zip(spec.inputs, inputs)}
            try:
                runs = {"onnx": session.run([t.name for t in spec.outputs], feeds)}
            except Exception as exc:
                raise ExportError(
                    f"ONNX Runtime cannot run the exported {name} graph at batch {batch}: {exc}. {advice['onnx']}"
                ) from exc
            with torch.no_grad():
                runs["torchscript"] = [t.numpy() for t in getattr(scripted, name)(*inputs)]
            eager = _measure_eager(name, module, nudged_modules, spec, inputs, continuous, nudges)
            for index, tensor in enumerate(spec.outputs):
                for runtime, outputs in runs.items():
                    parity[f"{runtime}.{name}.{tensor.name}.batch{batch}"] = _compare(
                        name, tensor.name, eager[index], outputs[index], discrete, what[runtime], advice[runtime]
                    )
    return {
        "worst_rounding_ratio": max(v["rounding_ratio"] for v in parity.values()),
        "worst_relative_rms": max(v["relative_rms"] for v in parity.values()),
        "worst_eager_rounding": max(v["eager_rounding"] for v in parity.values()),
        "worst_discrete_flip_fraction": max(v["discrete_flips"] for v in parity.values()),
        "rounding_factor_limit": PARITY_ROUNDING_FACTOR,
        "batches": list(PARITY_BATCHES),
    }


def _export_torchscript(model: GenerativeModel, examples: dict[str, tuple[Tensor, ...]], path: Path) -> None:
    # A frozen copy: callers of the TorchScript module get plain tensors, not autograd graphs.
    module = TorchScriptGraphs(copy.deepcopy(model).requires_grad_(False)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace_module(module, examples, check_trace=False)
    traced.save(str(path))
