"""Graph execution behind one small interface: ONNX Runtime by default, TorchScript on request.

The TorchScript runtime lives in `serving/runtime_torchscript.py`, the only module of `serving` that imports
torch; it is imported only when asked for, so a torch-free install serves ONNX models.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import numpy as np

from serving.config import RuntimeConfig
from synthserve.contract import Manifest
from synthserve.contract.sessions import CPU_PROVIDERS, check_signature, open_session

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

        if config.device == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise RuntimeError("--device cuda needs the GPU build of ONNX Runtime (pip install onnxruntime-gpu)")
            providers: tuple[str, ...] = ("CUDAExecutionProvider", *CPU_PROVIDERS)
        else:
            providers = CPU_PROVIDERS
        self._sessions = {
            name: open_session(directory / spec.file, config.intra_op_threads, providers)
            for name, spec in manifest.graphs.items()
        }
        self._outputs = {name: [t.name for t in spec.outputs] for name, spec in manifest.graphs.items()}
        for name, session in self._sessions.items():
            check_signature(f"graphs.{name}", manifest.graphs[name], session)

    def run(self, graph: str, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        return list(self._sessions[graph].run(self._outputs[graph], dict(feeds)))


def create_runtime(directory: Path, manifest: Manifest, config: RuntimeConfig) -> Runtime:
    if config.runtime == "onnx":
        return OnnxRuntime(directory, manifest, config)
    if config.runtime == "torchscript":
        from serving.runtime_torchscript import TorchScriptRuntime

        return TorchScriptRuntime(directory, manifest, config)
    raise ValueError(f"runtime must be 'onnx' or 'torchscript', got {config.runtime!r}")
