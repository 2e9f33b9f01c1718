"""A small model store whose values are known in closed form, written at test time.

`gauss` is a class-conditional Gaussian over two continuous columns plus a uniform categorical column:
  sample:   rows = [mean[label] + SCALE * z, floor(3 * u)]        (z normal [B, 2], u uniform [B, 1])
  log_prob: log p(x|c) = sum_d log N(x_d; mean[c, d], SCALE) - log 3; log p(x) and p(c|x) with PRIORS
  encode:   latent = (x[:, :2] - mean[label]) / SCALE + ENCODE_NOISE * eps   (eps normal [B, 2])
Version 2 shifts the means. `gauss-gan` has the sample graph only. `broken` fails its checksum and
`future` has an unknown format_version: both must be refused while the others serve.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from synthserve.contract import Calibration, Column, GraphSpec, LabelSpec, Manifest, Schema, TensorSpec

__all__ = [
    "CATEGORIES",
    "CLASSES",
    "ENCODE_NOISE",
    "MEANS",
    "PRIORS",
    "SCALE",
    "expected_log_prob",
    "write_store",
]

CLASSES = ("neg", "pos")
PRIORS = (0.7, 0.3)
CATEGORIES = ("a", "b", "c")
SCALE = 0.5
ENCODE_NOISE = 0.1
MEANS = {
    1: np.array([[0.0, 0.0], [3.0, -2.0]], dtype=np.float32),
    2: np.array([[10.0, 10.0], [20.0, -20.0]], dtype=np.float32),
}
CALIBRATION_FPR = (0.001, 0.01, 0.1)
CALIBRATION_QUANTILES = (-9.0, -6.0, -3.5)
OPSET = 18


def _const(name: str, value: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value, name))


def _tensor(name: str, dtype: int, width: int | None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, ["batch"] if width is None else ["batch", width])


def _save(nodes: list[onnx.NodeProto], inputs: list, outputs: list, path: Path) -> None:
    graph = helper.make_graph(nodes, path.stem, inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, path)


def _sample_graph(means: np.ndarray, path: Path) -> None:
    nodes = [
        _const("means", means),
        _const("scale", np.array(SCALE, dtype=np.float32)),
        _const("n_cat", np.array(len(CATEGORIES), dtype=np.float32)),
        helper.make_node("Gather", ["means", "label"], ["mu"], axis=0),
        helper.make_node("Mul", ["z", "scale"], ["zs"]),
        helper.make_node("Add", ["mu", "zs"], ["cont"]),
        helper.make_node("Mul", ["u", "n_cat"], ["u3"]),
        helper.make_node("Floor", ["u3"], ["cat"]),
        helper.make_node("Concat", ["cont", "cat"], ["rows"], axis=1),
    ]
    inputs = [
        _tensor("z", TensorProto.FLOAT, 2),
        _tensor("u", TensorProto.FLOAT, 1),
        _tensor("label", TensorProto.INT64, None),
    ]
    _save(nodes, inputs, [_tensor("rows", TensorProto.FLOAT, 3)], path)


def _log_prob_graph(means: np.ndarray, path: Path) -> None:
    constant = -2 * math.log(SCALE) - math.log(2 * math.pi) - math.log(len(CATEGORIES))
    nodes = [
        _const("means", means),
        _const("starts", np.array([0], dtype=np.int64)),
        _const("ends", np.array([2], dtype=np.int64)),
        _const("axes", np.array([1], dtype=np.int64)),
        _const("axis2", np.array([2], dtype=np.int64)),
        _const("half_inv_var", np.array(-0.5 / SCALE**2, dtype=np.float32)),
        _const("constant", np.array(constant, dtype=np.float32)),
        _const("log_priors", np.log(np.array(PRIORS, dtype=np.float32))),
        helper.make_node("Slice", ["rows", "starts", "ends", "axes"], ["x"]),
        helper.make_node("Unsqueeze", ["x", "axes"], ["x3"]),
        helper.make_node("Sub", ["x3", "means"], ["diff"]),
        helper.make_node("Mul", ["diff", "diff"], ["sq"]),
        helper.make_node("ReduceSum", ["sq", "axis2"], ["ssq"], keepdims=0),
        helper.make_node("Mul", ["ssq", "half_inv_var"], ["quad"]),
        helper.make_node("Add", ["quad", "constant"], ["log_prob_cond"]),
        helper.make_node("Add", ["log_prob_cond", "log_priors"], ["joint"]),
        helper.make_node("ReduceLogSumExp", ["joint", "axes"], ["log_prob"], keepdims=0),
        helper.make_node("Softmax", ["joint"], ["posterior"], axis=1),
    ]
    outputs = [
        _tensor("log_prob", TensorProto.FLOAT, None),
        _tensor("log_prob_cond", TensorProto.FLOAT, len(CLASSES)),
        _tensor("posterior", TensorProto.FLOAT, len(CLASSES)),
    ]
    _save(nodes, [_tensor("rows", TensorProto.FLOAT, 3)], outputs, path)


def _encode_graph(means: np.ndarray, path: Path) -> None:
    nodes = [
        _const("means", means),
        _const("starts", np.array([0], dtype=np.int64)),
        _const("ends", np.array([2], dtype=np.int64)),
        _const("axes", np.array([1], dtype=np.int64)),
        _const("inv_scale", np.array(1.0 / SCALE, dtype=np.float32)),
        _const("noise_scale", np.array(ENCODE_NOISE, dtype=np.float32)),
        helper.make_node("Slice", ["rows", "starts", "ends", "axes"], ["x"]),
        helper.make_node("Gather", ["means", "label"], ["mu"], axis=0),
        helper.make_node("Sub", ["x", "mu"], ["diff"]),
        helper.make_node("Mul", ["diff", "inv_scale"], ["standard"]),
        helper.make_node("Mul", ["eps", "noise_scale"], ["jitter"]),
        helper.make_node("Add", ["standard", "jitter"], ["latent"]),
    ]
    inputs = [
        _tensor("rows", TensorProto.FLOAT, 3),
        _tensor("label", TensorProto.INT64, None),
        _tensor("eps", TensorProto.FLOAT, 2),
    ]
    _save(nodes, inputs, [_tensor("latent", TensorProto.FLOAT, 2)], path)


def _spec(name: str, dtype: str, width: int | None, role: str, distribution: str | None = None) -> TensorSpec:
    return TensorSpec(name, dtype, (None,) if width is None else (None, width), role, distribution)


GRAPH_SPECS = {
    "sample": GraphSpec(
        "sample.onnx",
        (
            _spec("z", "float32", 2, "noise", "normal"),
            _spec("u", "float32", 1, "noise", "uniform"),
            _spec("label", "int64", None, "label"),
        ),
        (_spec("rows", "float32", 3, "output"),),
    ),
    "log_prob": GraphSpec(
        "log_prob.onnx",
        (_spec("rows", "float32", 3, "rows"),),
        (
            _spec("log_prob", "float32", None, "output"),
            _spec("log_prob_cond", "float32", 2, "output"),
            _spec("posterior", "float32", 2, "output"),
        ),
    ),
    "encode": GraphSpec(
        "encode.onnx",
        (
            _spec("rows", "float32", 3, "rows"),
            _spec("label", "int64", None, "label"),
            _spec("eps", "float32", 2, "noise", "normal"),
        ),
        (_spec("latent", "float32", 2, "output"),),
    ),
}
BUILDERS = {"sample": _sample_graph, "log_prob": _log_prob_graph, "encode": _encode_graph}

SCHEMA = Schema(
    columns=(
        Column("x0", "continuous", "float64", min=-1000.0, max=1000.0),
        Column("x1", "continuous", "float64", min=-1000.0, max=1000.0),
        Column("cat", "categorical", "object", categories=CATEGORIES),
    ),
    label=LabelSpec("y", "object", CLASSES, PRIORS),
)


def _write_version(
    store: Path, name: str, version: int, means: np.ndarray, graphs: tuple[str, ...], family: str
) -> Path:
    directory = store / name / str(version)
    directory.mkdir(parents=True)
    for graph in graphs:
        BUILDERS[graph](means, directory / GRAPH_SPECS[graph].file)
    files = {
        GRAPH_SPECS[g].file: hashlib.sha256((directory / GRAPH_SPECS[g].file).read_bytes()).hexdigest() for g in graphs
    }
    manifest = Manifest(
        name=name,
        version=version,
        family=family,
        schema=SCHEMA,
        graphs={g: GRAPH_SPECS[g] for g in graphs},
        created_at="2026-11-21T00:00:00Z",
        synthserve_version="0.1.0",
        calibration=Calibration(CALIBRATION_FPR, CALIBRATION_QUANTILES, 1000) if "log_prob" in graphs else None,
        metrics={"heldout_nll": 1.25, "c2st_auc": 0.5},
        training={"family": family},
        files=files,
    )
    (directory / "manifest.json").write_text(manifest.to_json())
    return directory


def write_store(store: Path) -> Path:
    """Writes gauss v1+v2, gauss-gan v1, broken v1 (bad checksum) and future v1 (format_version 2)."""
    all_graphs = ("sample", "log_prob", "encode")
    _write_version(store, "gauss", 1, MEANS[1], all_graphs, "flow")
    _write_version(store, "gauss", 2, MEANS[2], all_graphs, "flow")
    _write_version(store, "gauss-gan", 1, MEANS[1], ("sample",), "gan")
    broken = _write_version(store, "broken", 1, MEANS[1], all_graphs, "flow")
    (broken / "sample.onnx").write_bytes((broken / "sample.onnx").read_bytes() + b"tampered")
    future = _write_version(store, "future", 1, MEANS[1], all_graphs, "flow")
    data = json.loads((future / "manifest.json").read_text())
    data["format_version"] = 2
    (future / "manifest.json").write_text(json.dumps(data))
    (store / "gauss" / ".tmp-publishing").mkdir()  # readers ignore hidden and non-integer directories
    return store


def expected_log_prob(rows: np.ndarray, version: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Closed-form log p(x), log p(x|c) and p(c|x) in float64."""
    means = MEANS[version].astype(np.float64)
    x = rows[:, None, :2].astype(np.float64)
    cond = (
        -0.5 * ((x - means[None]) ** 2).sum(-1) / SCALE**2
        - 2 * math.log(SCALE)
        - math.log(2 * math.pi)
        - math.log(len(CATEGORIES))
    )
    joint = cond + np.log(np.array(PRIORS))
    log_p = np.logaddexp.reduce(joint, axis=1)
    return log_p, cond, np.exp(joint - log_p[:, None])
