"""The parity check: the exported graphs (ONNX Runtime, and the TorchScript module) compute what eager computes.

Parity is checked on fresh random inputs at batch sizes 1, 7 and 1024; a failure raises an ExportError that says
what to do. Exported graphs never match eager bit for bit (other kernels and summation orders; ONNX Runtime's tanh is
a few ulps off), and a fixed tolerance either fails valid ill-conditioned models or misses a wrong graph of a
well-conditioned one, so each output element is measured in units of its own float32 rounding (`training.rounding`).
A graph passes when its difference from eager float32, in those units, has an RMS of at most PARITY_ROUNDING_FACTOR
per column. A wrong graph (a weight off by a relative d, a wrong op) moves the outputs through the same Jacobian as a
rounding does: about d / 1e-7 units, whatever the conditioning.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from synthserve.contract import Schema
from synthserve.contract.sessions import open_session
from training.graphs import GraphModule, graph_specs, random_inputs
from training.models import GenerativeModel
from training.rounding import EagerOutput, as_columns, measure_eager, nudged_models

__all__ = [
    "MAX_DISCRETE_FLIP_FRACTION",
    "PARITY_BATCHES",
    "PARITY_ROUNDING_FACTOR",
    "SMALL_BATCH",
    "ExportError",
    "check_parity",
    "compare",
]

PARITY_BATCHES = (1, 7, 1024)
# Valid graphs land at most 3.2 units (RMS) from eager: 22 models (the KEEL tables under the former type
# inference, breast cancer, digits, stress tables; all families), 10-40 parity seeds each. A relative slip of
# 1e-5 in every weight of a trained model shows as 45-120 units.
PARITY_ROUNDING_FACTOR = 16.0
# Discrete outputs (floor / argmax, gaps) may flip where float32 rounding moves a value across a boundary: in this
# fraction of the rows, and in one row of a batch of fewer than 100 (one of 7 is 14%, no evidence of a wrong graph).
MAX_DISCRETE_FLIP_FRACTION = 0.01
# Below 64 rows a column's RMS is no statistic (one row at batch 1): small batches pool the columns' ratios.
SMALL_BATCH = 64


class ExportError(RuntimeError):
    """The exported graphs do not reproduce the eager model."""


def _rms(values: np.ndarray) -> np.ndarray:
    return np.sqrt((values**2).mean(0))


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


def compare(
    graph: str,
    output: str,
    eager: EagerOutput,
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
    expected, actual = eager.values, as_columns(actual)
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
    flipped_rows = int(flipped.any(1).sum())
    flips = flipped_rows / len(expected)
    too_many_flips = flipped_rows > max(1.0, MAX_DISCRETE_FLIP_FRACTION * len(expected))
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
    if ratio > PARITY_ROUNDING_FACTOR or too_many_flips:
        # What failed and the advice first, the details last: a one-line report may cut the end.
        failures = []
        if ratio > PARITY_ROUNDING_FACTOR:
            pooled_note = ", RMS over the columns" if pooled else ""
            failures.append(
                f"{ratio:.1f}x the float32 rounding of eager (limit {PARITY_ROUNDING_FACTOR:g}x{pooled_note})"
            )
        if too_many_flips:
            failures.append(
                f"discrete values or gaps differ in {flipped_rows} of {len(expected)} rows (limit "
                f"{MAX_DISCRETE_FLIP_FRACTION} of them, or one)"
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


def check_parity(
    model: GenerativeModel, schema: Schema, directory: Path, seed: int = 0, exporters: dict[str, str] | None = None
) -> dict[str, object]:
    """Compare the graphs in `directory` (ONNX Runtime, and model.pt) with eager `model` on fresh random inputs;
    raises ExportError on a failure. `exporters` (graph -> ONNX exporter) only words the advice of a failure."""
    model = model.cpu().eval()
    generator = torch.Generator().manual_seed(seed + 1)  # not the inputs the graphs were traced with
    nudges = torch.Generator().manual_seed(seed)
    copies = nudged_models(model, nudges)
    discrete = np.array([c.kind != "continuous" for c in schema.columns])
    continuous = torch.from_numpy(~discrete)
    scripted = torch.jit.load(str(directory / "model.pt"))
    parity: dict[str, dict[str, float]] = {}
    for name, spec in graph_specs(model, schema).items():
        exporter = (exporters or {}).get(name)
        what = {"onnx": f"ONNX ({exporter} exporter)" if exporter else "ONNX", "torchscript": "TorchScript"}
        advice = {runtime: _advice(runtime, exporter) for runtime in what}
        module = GraphModule(model, name).eval()
        nudged_modules = [GraphModule(m, name).eval() for m in copies]
        session = open_session(directory / spec.file)
        for batch in PARITY_BATCHES:
            inputs = random_inputs(model, spec, batch, generator)
            feeds = {t.name: x.numpy() for t, x in zip(spec.inputs, inputs)}
            try:
                runs = {"onnx": session.run([t.name for t in spec.outputs], feeds)}
            except Exception as exc:
                raise ExportError(
                    f"ONNX Runtime cannot run the exported {name} graph at batch {batch}: {exc}. {advice['onnx']}"
                ) from exc
            with torch.no_grad():
                runs["torchscript"] = [t.numpy() for t in getattr(scripted, name)(*inputs)]
            eager = measure_eager(name, module, nudged_modules, spec, inputs, continuous, nudges)
            for index, tensor in enumerate(spec.outputs):
                for runtime, outputs in runs.items():
                    parity[f"{runtime}.{name}.{tensor.name}.batch{batch}"] = compare(
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
