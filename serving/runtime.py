"""Graph execution behind one small interface: ONNX Runtime by default, TorchScript on request.

`TorchScriptRuntime` is the only place in `serving` that may import torch, and it does so lazily, so a
torch-free install serves ONNX models.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from serving.config import RuntimeConfig
from synthserve.contract import Manifest

__all__ = ["OnnxRuntime", "Runtime", "TorchScriptRuntime", "create_runtime"]


class Runtime(Protocol):
    """Runs one graph of one model version; thread-safe, called from the batcher's worker threads."""

    def run(self, graph: str, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Feeds by input name; returns the outputs in the manifest's order."""
        ...


class OnnxRuntime:
    """One `onnxruntime.InferenceSession` per graph (sessions are thread-safe and release the GIL)."""

    def __init__(self, directory: Path, manifest: Manifest, config: RuntimeConfig) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = config.intra_op_threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
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
            declared = {t.name for t in manifest.graphs[name].inputs}
            actual = {i.name for i in session.get_inputs()}
            if declared != actual:
                raise RuntimeError(
                    f"graphs.{name}: ONNX inputs {sorted(actual)} differ from the manifest's {sorted(declared)}"
                )

    def run(self, graph: str, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        return list(self._sessions[graph].run(self._outputs[graph], dict(feeds)))


class TorchScriptRuntime:
    """The manifest's TorchScript module; methods named like the graphs take inputs positionally."""

    def __init__(self, directory: Path, manifest: Manifest, config: RuntimeConfig) -> None:
        import torch  # the only torch import in serving

        if manifest.torchscript is None:
            raise RuntimeError("manifest has no torchscript module")
        self._torch: Any = torch
        torch.set_num_threads(config.intra_op_threads)
        device = "cuda" if config.device == "cuda" else "cpu"
        self._device = device
        self._module = torch.jit.load(str(directory / manifest.torchscript), map_location=device)
        self._inputs = {name: [t.name for t in spec.inputs] for name, spec in manifest.graphs.items()}

    def run(self, graph: str, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        torch = self._torch
        args = [torch.from_numpy(np.ascontiguousarray(feeds[name])).to(self._device) for name in self._inputs[graph]]
        with torch.inference_mode():
            result = getattr(self._module, graph)(*args)
        outputs = result if isinstance(result, tuple | list) else (result,)
        return [o.detach().cpu().numpy() for o in outputs]


def create_runtime(directory: Path, manifest: Manifest, config: RuntimeConfig) -> Runtime:
    if config.runtime == "onnx":
        return OnnxRuntime(directory, manifest, config)
    if config.runtime == "torchscript":
        return TorchScriptRuntime(directory, manifest, config)
    raise ValueError(f"runtime must be 'onnx' or 'torchscript', got {config.runtime!r}")
