"""How every reader of a model store opens a graph with ONNX Runtime: the gRPC server, the TorchServe handler,
training's checks and the benchmarks run the same session settings, so a graph behaves the same in each.

onnxruntime is imported when a session is opened, not with the contract (the archive builder and the manifest
readers need no runtime).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from synthserve.contract.manifest import GraphSpec

__all__ = ["CPU_PROVIDERS", "SignatureError", "check_signature", "open_session", "session_options"]

CPU_PROVIDERS = ("CPUExecutionProvider",)
_ORT_TYPES = {"float32": "tensor(float)", "int64": "tensor(int64)"}


class SignatureError(ValueError):
    """A graph file does not take or return the tensors its manifest declares."""


def session_options(intra_op_threads: int = 1) -> Any:
    """`onnxruntime.SessionOptions`: `intra_op_threads` per run, one inter-op thread (callers run graphs in their
    own threads), warnings only, no CPU arena (an arena keeps every session's largest run for good: hundreds of
    MB after one large request to a heavy graph; plain allocations cost the same here, docs/reliability.md).
    Telemetry is off: no reader of a model store makes network calls of its own."""
    import onnxruntime as ort

    ort.disable_telemetry_events()
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.enable_cpu_mem_arena = False
    return options


def open_session(path: Path, intra_op_threads: int = 1, providers: Sequence[str] = CPU_PROVIDERS) -> Any:
    """An `onnxruntime.InferenceSession` of the graph file at `path` with `session_options`."""
    import onnxruntime as ort

    return ort.InferenceSession(str(path), sess_options=session_options(intra_op_threads), providers=list(providers))


def check_signature(where: str, spec: GraphSpec, session: Any) -> None:
    """Refuses (SignatureError naming the tensor) a session whose inputs or outputs differ from the manifest's
    names, element types or fixed dimensions, so a mismatch costs the version at load instead of failing every
    request to it."""
    declared = {t.name for t in spec.inputs}
    actual = {i.name: i for i in session.get_inputs()}
    if declared != set(actual):
        raise SignatureError(f"{where}: ONNX inputs {sorted(actual)} differ from the manifest's {sorted(declared)}")
    produced = {o.name: o for o in session.get_outputs()}
    missing = [t.name for t in spec.outputs if t.name not in produced]
    if missing:
        raise SignatureError(f"{where}: outputs {missing} are not produced by the ONNX graph ({sorted(produced)})")
    for kind, tensors, found in (("inputs", spec.inputs, actual), ("outputs", spec.outputs, produced)):
        for tensor in tensors:
            node = found[tensor.name]
            if node.type != _ORT_TYPES[tensor.dtype]:
                raise SignatureError(
                    f"{where}.{kind}.{tensor.name}: ONNX type {node.type}, manifest says {tensor.dtype}"
                )
            shape = list(node.shape)
            fixed = [d if isinstance(d, int) else None for d in shape]
            if len(shape) != len(tensor.shape) or any(
                f is not None and d is not None and f != d for f, d in zip(fixed[1:], tensor.shape[1:])
            ):
                raise SignatureError(
                    f"{where}.{kind}.{tensor.name}: ONNX shape {shape}, manifest says {list(tensor.shape)}"
                )
