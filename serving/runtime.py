"""Graph execution behind one small interface: ONNX Runtime by default, TorchScript on request.

The TorchScript runtime lives in `serving/runtime_torchscript.py`, the only module of `serving` that imports
torch; it is imported only when asked for, so a torch-free install serves ONNX models.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from serving.config import RuntimeConfig
from synthserve.contract import GraphSpec, Manifest

__all__ = ["OnnxRuntime", "Runtime", "create_runtime"]


class Runtime(Protocol):
    """Runs one graph of one model version; thread-safe, called from the batcher's worker threads."""

    def run(self, graph: str, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Feeds by input name; returns the outputs in the manifest's order."""
        ...


class OnnxRuntime:
    """One `onnxruntime.InferenceSession` per graph (sessions are thread-safe and release the GIL)."""

    def __init__(self, directory: Path, manifest: Manifest, config: RuntimeConfig) -> None:
        import onnxruntime as ort

        ort.disable_telemetry_events()  # the server makes no network calls of its own (k8s NetworkPolicy: no egress)
        options = ort.SessionOptions()
        options.intra_op_num_threads = config.intra_op_threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        # No CPU arena: an arena keeps every session's largest run for good (hundreds of MB after one large
        # request to a heavy graph); plain allocations cost the same here (docs/reliability.md) and are returned.
        options.enable_cpu_mem_arena = False
        if config.device == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise RuntimeError("--device cuda needs the GPU build of ONNX Runtime (pip install onnxruntime-gpu)")
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        self._sessions = {
            name: ort.InferenceSession(str(directory / spec.file), sess_options=options, providers=providers)
            for name, spec in manifest.graphs.items()
        }
        self._outputs = {name: [t.name for t in spec.outputs] for name, spec in manifest.graphs.items()}
        for name, session in self._sessions.items():
            _check_signature(f"graphs.{name}", manifest.graphs[name], session)

    def run(self, graph: str, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        return list(self._sessions[graph].run(self._outputs[graph], dict(feeds)))


_ORT_TYPES = {"float32": "tensor(float)", "int64": "tensor(int64)"}


def _check_signature(where: str, spec: GraphSpec, session: Any) -> None:
    """Refuses (RuntimeError naming the tensor) a graph whose inputs or outputs differ from the manifest's, so a
    mismatch costs the version at load instead of failing every request to it."""
    declared = {t.name for t in spec.inputs}
    actual = {i.name: i for i in session.get_inputs()}
    if declared != set(actual):
        raise RuntimeError(f"{where}: ONNX inputs {sorted(actual)} differ from the manifest's {sorted(declared)}")
    produced = {o.name: o for o in session.get_outputs()}
    missing = [t.name for t in spec.outputs if t.name not in produced]
    if missing:
        raise RuntimeError(f"{where}: outputs {missing} are not produced by the ONNX graph ({sorted(produced)})")
    for kind, tensors, found in (("inputs", spec.inputs, actual), ("outputs", spec.outputs, produced)):
        for tensor in tensors:
            node = found[tensor.name]
            if node.type != _ORT_TYPES[tensor.dtype]:
                raise RuntimeError(f"{where}.{kind}.{tensor.name}: ONNX type {node.type}, manifest says {tensor.dtype}")
            shape = list(node.shape)
            fixed = [d if isinstance(d, int) else None for d in shape]
            if len(shape) != len(tensor.shape) or any(
                f is not None and d is not None and f != d for f, d in zip(fixed[1:], tensor.shape[1:])
            ):
                raise RuntimeError(
                    f"{where}.{kind}.{tensor.name}: ONNX shape {shape}, manifest says {list(tensor.shape)}"
                )


def create_runtime(directory: Path, manifest: Manifest, config: RuntimeConfig) -> Runtime:
    if config.runtime == "onnx":
        return OnnxRuntime(directory, manifest, config)
    if config.runtime == "torchscript":
        from serving.runtime_torchscript import TorchScriptRuntime

        return TorchScriptRuntime(directory, manifest, config)
    raise ValueError(f"runtime must be 'onnx' or 'torchscript', got {config.runtime!r}")
