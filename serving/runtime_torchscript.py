"""The TorchScript runtime (`--runtime torchscript`): the only module of `serving` that imports torch."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from serving.config import RuntimeConfig
from synthserve.contract import Manifest

__all__ = ["TorchScriptRuntime"]


class TorchScriptRuntime:
    """The manifest's TorchScript module; methods named like the graphs take inputs positionally."""

    def __init__(self, directory: Path, manifest: Manifest, config: RuntimeConfig) -> None:
        if manifest.torchscript is None:
            raise RuntimeError("manifest has no torchscript module")
        torch.set_num_threads(config.intra_op_threads)
        device = "cuda" if config.device == "cuda" else "cpu"
        self._device = device
        self._module = torch.jit.load(str(directory / manifest.torchscript), map_location=device)
        self._inputs = {name: [t.name for t in spec.inputs] for name, spec in manifest.graphs.items()}

    def run(self, graph: str, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        args = [torch.from_numpy(np.ascontiguousarray(feeds[name])).to(self._device) for name in self._inputs[graph]]
        with torch.inference_mode():
            result = getattr(self._module, graph)(*args)
        outputs = result if isinstance(result, tuple | list) else (result,)
        return [o.detach().cpu().numpy() for o in outputs]
