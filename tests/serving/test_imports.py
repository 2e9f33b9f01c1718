"""Serving never imports torch or training: a torch-free install must serve ONNX models."""

from __future__ import annotations

import subprocess
import sys

MODULES = ["serving.server", "serving.cli", "serving.client", "serving.runtime", "serving.registry", "serving.batcher"]


def test_serving_imports_no_torch_and_no_training() -> None:
    code = (
        f"import sys, importlib; [importlib.import_module(m) for m in {MODULES!r}]; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'training')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
