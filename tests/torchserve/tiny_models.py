"""Tiny contract-compliant models with known values, written with onnx.helper (no torch).

Each is a class-conditional Gaussian: `sample` maps normal noise to the two continuous columns and uniform
noise to a categorical and an integer column, `log_prob` is its exact density. `expected_rows` and
`expected_log_density` recompute both with numpy from the noise rule alone, so tests compare the handler
against ground truth, not against itself.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from synthserve.contract import Calibration, Column, GraphSpec, LabelSpec, Manifest, Schema, TensorSpec, draw_noise

__all__ = ["COLORS", "N_COUNTS", "SIGMA", "TINY_MODELS", "TinyModel", "write_tiny_model"]

COLORS = ("red", "green", "blue")
N_COUNTS = 10  # the integer column is uniform on 0..9
SIGMA = np.array([0.5, 2.0], dtype=np.float32)


@dataclass(frozen=True)
class TinyModel:
    """Ground truth of one fixture model: columns x, color, count, y (graph order)."""

    name: str
    mu: np.ndarray  # [C, 2] float32: means of x and y per class
    classes: tuple[str, ...] | None  # None: unconditional
    priors: tuple[float, ...]

    def expected_rows(self, seed: int, labels: np.ndarray | None, n_rows: int) -> dict[str, list[Any]]:
        z = draw_noise(seed, 0, 0, n_rows, (2,), "normal")
        u = draw_noise(seed, 1, 0, n_rows, (2,), "uniform")
        means = self.mu[labels if labels is not None else np.zeros(n_rows, dtype=np.int64)]
        xy = z * SIGMA + means
        codes = np.floor(u * np.array([len(COLORS), N_COUNTS], dtype=np.float32)).astype(np.int64)
        rows: dict[str, list[Any]] = {
            "x": xy[:, 0].astype(float).tolist(),
            "color": [COLORS[c] for c in codes[:, 0]],
            "count": codes[:, 1].tolist(),
            "y": xy[:, 1].astype(float).tolist(),
        }
        if self.classes is not None and labels is not None:
            rows["target"] = [self.classes[c] for c in labels]
        return rows

    def expected_log_density(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """log p(x) [n] and p(c|x) [n, C] in float64."""
        xy = np.stack([x, y], axis=1)[:, None, :]
        standard = (xy - self.mu[None].astype(np.float64)) / SIGMA.astype(np.float64)
        cond = -0.5 * (standard**2).sum(-1) + _log_constant()
        joint = cond + np.log(np.asarray(self.priors))
        log_p = np.logaddexp.reduce(joint, axis=1)
        return log_p, np.exp(joint - log_p[:, None])


def _log_constant() -> float:
    return float(-np.log(SIGMA.astype(np.float64)).sum() - math.log(2 * math.pi) - math.log(len(COLORS) * N_COUNTS))


TINY_MODELS = (
    TinyModel("tiny-cond", np.array([[0.0, 0.0], [3.0, -4.0]], dtype=np.float32), ("neg", "pos"), (0.7, 0.3)),
    TinyModel("tiny-uncond", np.array([[1.0, 2.0]], dtype=np.float32), None, (1.0,)),
)


def _tensor(name: str, dtype: int, shape: list[str | int]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, shape)


def _const(name: str, value: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def _sample_graph(model: TinyModel) -> onnx.ModelProto:
    conditional = model.classes is not None
    nodes = [helper.make_node("Mul", ["z", "sigma"], ["scaled"])]
    if conditional:
        nodes.append(helper.make_node("Gather", ["mu", "label"], ["means"], axis=0))
        nodes.append(helper.make_node("Add", ["scaled", "means"], ["xy"]))
    else:
        nodes.append(helper.make_node("Add", ["scaled", "mu"], ["xy"]))
    nodes += [
        helper.make_node("Mul", ["u", "levels"], ["u_scaled"]),
        helper.make_node("Floor", ["u_scaled"], ["codes"]),
        helper.make_node("Split", ["xy", "two_ones"], ["x", "y"], axis=1),
        helper.make_node("Split", ["codes", "two_ones"], ["color", "count"], axis=1),
        helper.make_node("Concat", ["x", "color", "count", "y"], ["rows"], axis=1),
    ]
    inputs = [_tensor("z", TensorProto.FLOAT, ["batch", 2]), _tensor("u", TensorProto.FLOAT, ["batch", 2])]
    if conditional:
        inputs.append(_tensor("label", TensorProto.INT64, ["batch"]))
    graph = helper.make_graph(
        nodes,
        "sample",
        inputs,
        [_tensor("rows", TensorProto.FLOAT, ["batch", 4])],
        initializer=[
            _const("sigma", SIGMA),
            _const("mu", model.mu),
            _const("levels", np.array([len(COLORS), N_COUNTS], dtype=np.float32)),
            _const("two_ones", np.array([1, 1], dtype=np.int64)),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _log_prob_graph(model: TinyModel) -> onnx.ModelProto:
    nodes = [
        helper.make_node("Gather", ["rows", "xy_columns"], ["xy"], axis=1),  # [B, 2]
        helper.make_node("Unsqueeze", ["xy", "axis1"], ["xy3"]),  # [B, 1, 2]
        helper.make_node("Sub", ["xy3", "mu"], ["diff"]),  # [B, C, 2]
        helper.make_node("Div", ["diff", "sigma"], ["standard"]),
        helper.make_node("Mul", ["standard", "standard"], ["squares"]),
        helper.make_node("ReduceSum", ["squares", "axis2"], ["quadratic"], keepdims=0),  # [B, C]
        helper.make_node("Mul", ["quadratic", "minus_half"], ["half_quadratic"]),
        helper.make_node("Add", ["half_quadratic", "log_constant"], ["log_prob_cond"]),
        helper.make_node("Add", ["log_prob_cond", "log_priors"], ["joint"]),
        helper.make_node("ReduceLogSumExp", ["joint"], ["log_prob"], axes=[1], keepdims=0),  # [B]
        helper.make_node("Unsqueeze", ["log_prob", "axis1"], ["log_prob_column"]),
        helper.make_node("Sub", ["joint", "log_prob_column"], ["log_posterior"]),
        helper.make_node("Exp", ["log_posterior"], ["posterior"]),
    ]
    n_classes = len(model.priors)
    graph = helper.make_graph(
        nodes,
        "log_prob",
        [_tensor("rows", TensorProto.FLOAT, ["batch", 4])],
        [
            _tensor("log_prob", TensorProto.FLOAT, ["batch"]),
            _tensor("log_prob_cond", TensorProto.FLOAT, ["batch", n_classes]),
            _tensor("posterior", TensorProto.FLOAT, ["batch", n_classes]),
        ],
        initializer=[
            _const("xy_columns", np.array([0, 3], dtype=np.int64)),
            _const("axis1", np.array([1], dtype=np.int64)),
            _const("axis2", np.array([2], dtype=np.int64)),
            _const("mu", model.mu),
            _const("sigma", SIGMA),
            _const("minus_half", np.array(-0.5, dtype=np.float32)),
            _const("log_constant", np.array(_log_constant(), dtype=np.float32)),
            _const("log_priors", np.log(np.asarray(model.priors)).astype(np.float32)),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _manifest(model: TinyModel, files: dict[str, str], calibration: Calibration) -> Manifest:
    conditional = model.classes is not None
    sample_inputs = [
        TensorSpec("z", "float32", (None, 2), "noise", "normal"),
        TensorSpec("u", "float32", (None, 2), "noise", "uniform"),
    ]
    if conditional:
        sample_inputs.append(TensorSpec("label", "int64", (None,), "label"))
    n_classes = len(model.priors)
    graphs = {
        "sample": GraphSpec("sample.onnx", tuple(sample_inputs), (TensorSpec("rows", "float32", (None, 4), "output"),)),
        "log_prob": GraphSpec(
            "log_prob.onnx",
            (TensorSpec("rows", "float32", (None, 4), "rows"),),
            (
                TensorSpec("log_prob", "float32", (None,), "output"),
                TensorSpec("log_prob_cond", "float32", (None, n_classes), "output"),
                TensorSpec("posterior", "float32", (None, n_classes), "output"),
            ),
        ),
    }
    label = LabelSpec("target", "object", model.classes, model.priors) if model.classes is not None else None
    schema = Schema(
        columns=(
            Column("x", "continuous", "float64"),
            Column("color", "categorical", "object", categories=COLORS),
            Column("count", "integer", "int64", min=0, max=N_COUNTS - 1),
            Column("y", "continuous", "float64"),
        ),
        label=label,
    )
    return Manifest(
        name=model.name,
        version=1,
        family="flow",
        schema=schema,
        graphs=graphs,
        created_at="2026-11-21T00:00:00Z",
        synthserve_version="0.1.0",
        calibration=calibration,
        training={"density_note": "discrete columns are uniform: a constant log(1/30) per row"},
        files=files,
    )


def _calibration(model: TinyModel) -> Calibration:
    """Held-out quantiles of log p(x) from the true model (the discrete columns add a constant)."""
    rng = np.random.default_rng(0)
    labels = rng.choice(len(model.priors), size=20_000, p=np.asarray(model.priors))
    xy = rng.standard_normal((20_000, 2)) * SIGMA + model.mu[labels]
    log_p, _ = model.expected_log_density(xy[:, 0], xy[:, 1])
    fpr = (0.001, 0.01, 0.05, 0.1)
    return Calibration(fpr, tuple(float(q) for q in np.quantile(log_p, fpr)), 20_000)


def write_tiny_model(store: Path, model: TinyModel, version: int = 1) -> Path:
    directory = store / model.name / str(version)
    directory.mkdir(parents=True)
    files = {}
    for name, proto in (("sample.onnx", _sample_graph(model)), ("log_prob.onnx", _log_prob_graph(model))):
        onnx.checker.check_model(proto, full_check=True)
        data = proto.SerializeToString()
        (directory / name).write_bytes(data)
        files[name] = hashlib.sha256(data).hexdigest()
    (directory / "manifest.json").write_text(_manifest(model, files, _calibration(model)).to_json())
    return directory
