"""The generators behind one call: fit on a training CSV, write as many generated rows as it holds to a CSV.

synthserve families run in this process through `training.pipeline.train_and_publish` (what `synthserve train`
runs), then sample through the exported ONNX graph with the server's noise rule (`training.exported`) and finish
the rows as the server does (`training.data.decode_rows`); the label column holds the classes asked for, in the
training part's counts. SDV's synthesizers run in their own virtual environment, one subprocess per fit
(`sdv_worker.py`), because SDV pins its own pandas, torch and scikit-learn ranges.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from training.models import FAMILIES

__all__ = [
    "FAMILIES",
    "SDV_REQUIREMENT",
    "SDV_SYNTHESIZERS",
    "Generated",
    "SdvUnavailable",
    "ensure_sdv_env",
    "run_sdv",
    "run_synthserve",
]

SDV_SYNTHESIZERS = ("gaussian_copula", "tvae", "ctgan")
SDV_REQUIREMENT = "sdv>=2,<3"
SDV_WORKER = Path(__file__).with_name("sdv_worker.py")
# One core, as synthserve's side runs: ctgan's data transformer otherwise fans columns out to joblib worker
# processes (n_jobs=-1) above 500 rows, whose CPU time the worker cannot count.
ONE_THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "LOKY_MAX_CPU_COUNT": "1",
}
MAX_ERROR_CHARS = 400


@dataclass(frozen=True)
class Generated:
    """One generator's run: its rows (CSV) and timings. `fit_seconds` is the training loop for synthserve (the
    manifest's `training_seconds`) and `fit` for SDV; `call_seconds` is the whole `train_and_publish` call
    (load, train, export, parity check, evaluation, publish) for synthserve, None for SDV."""

    path: Path
    fit_seconds: float
    fit_cpu_seconds: float
    call_seconds: float | None
    details: dict[str, Any] = field(default_factory=dict)


class SdvUnavailable(RuntimeError):
    """SDV's environment could not be made; the message says which step failed and how."""


def run_synthserve(
    train_csv: Path,
    label: str,
    family: str,
    name: str,
    model_store: Path,
    output: Path,
    *,
    epochs: int | None,
    seed: int,
    onnx_exporter: str,
    family_config: dict[str, Any] | None = None,
    train_config: dict[str, Any] | None = None,
) -> Generated:
    """`family_config` and `train_config`: overrides of the family's config and of the training loop's settings
    (`training.options.split_options`)."""
    from synthserve.contract import load_manifest
    from synthserve.contract.frames import label_codes
    from training.data import decode_rows
    from training.exported import ExportedModel
    from training.pipeline import TrainRequest, train_and_publish

    request = TrainRequest(
        data=str(train_csv),
        family=family,
        name=name,
        model_store=model_store,
        label=label,
        seed=seed,
        epochs=epochs,
        progress=False,
        plots=False,
        onnx_exporter=onnx_exporter,
        family_config=family_config or {},
        train_config=train_config or {},
        # A refused model is still measured; the gate's verdict is kept in the details.
        accept_weak=True,
    )
    started = time.perf_counter()
    version = train_and_publish(request)
    call_seconds = time.perf_counter() - started
    assert version is not None
    manifest = load_manifest(version)
    schema = manifest.schema
    assert schema.label is not None
    training_labels = pd.read_csv(train_csv)[label]
    codes = np.sort(label_codes(training_labels, schema.label.classes, label, allow_missing=False).astype(np.int64))
    rows = ExportedModel(version).sample(codes, seed)
    frame = decode_rows(rows, schema)
    frame[label] = np.asarray(schema.label.classes, dtype=object)[codes]
    frame.to_csv(output, index=False)
    metrics = manifest.metrics
    gate = metrics.get("quality_gate") or {}
    return Generated(
        output,
        float(metrics["training_seconds"]),
        float(metrics["training_cpu_seconds"]),
        call_seconds,
        {
            "epochs_run": metrics.get("epochs_run"),
            "best_epoch": metrics.get("best_epoch"),
            "export_seconds": metrics.get("export_seconds"),
            "heldout_c2st_auc": metrics.get("c2st_auc"),
            "quality_gate_passed": gate.get("passed"),
            "quality_gate_reasons": gate.get("reasons", []),
            "notes": list(manifest.training.get("notes", [])),
            "column_kinds": {c.name: c.kind for c in schema.columns},
        },
    )


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    line = lines[-1] if lines else "(no output)"
    return line if len(line) <= MAX_ERROR_CHARS else line[: MAX_ERROR_CHARS - 3] + "..."


def ensure_sdv_env(venv: Path, torch_version: str, log: Any = sys.stderr) -> Path:
    """The Python of SDV's virtual environment, made first if it does not import SDV: torch pinned and installed
    first (a bare `torch` requirement pulls the CUDA build, gigabytes), then SDV 2.x. SdvUnavailable on failure."""
    python = venv / "bin" / "python"
    if python.exists() and subprocess.run([python, "-c", "import sdv, torch"], capture_output=True).returncode == 0:
        return python
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [str(python), "-m", "pip", "install", "-q", f"torch=={torch_version}"],
        [str(python), "-m", "pip", "install", "-q", SDV_REQUIREMENT],
    ]
    for step in steps:
        print(f"sdv environment: {' '.join(step)}", file=log, flush=True)
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode != 0:
            raise SdvUnavailable(f"`{' '.join(step)}` exited with {done.returncode}: {_last_line(done.stderr)}")
    check = subprocess.run([python, "-c", "import sdv, torch"], capture_output=True, text=True)
    if check.returncode != 0:
        raise SdvUnavailable(f"SDV installed in {venv} but does not import: {_last_line(check.stderr)}")
    return python


def run_sdv(
    python: Path,
    synthesizer: str,
    train_csv: Path,
    n_rows: int,
    output: Path,
    *,
    epochs: int | None,
    seed: int,
    timeout_s: float,
) -> Generated:
    """One SDV fit + sample in SDV's environment, one thread; RuntimeError with the worker's last line on failure."""
    command = [str(python), str(SDV_WORKER), "--train", str(train_csv), "--synthesizer", synthesizer]
    command += ["--rows", str(n_rows), "--output", str(output), "--seed", str(seed)]
    if epochs is not None:
        command += ["--epochs", str(epochs)]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout_s, env={**os.environ, **ONE_THREAD_ENV}
    )
    if done.returncode != 0:
        raise RuntimeError(f"SDV {synthesizer} exited with {done.returncode}: {_last_line(done.stderr)}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return Generated(
        output,
        float(report["fit_seconds"]),
        float(report["fit_cpu_seconds"]),
        None,
        {
            "sample_seconds": report["sample_seconds"],
            "sdv_version": report["sdv_version"],
            "torch_version": report["torch_version"],
            "column_sdtypes": {name: c["sdtype"] for name, c in report["metadata"]["columns"].items()},
            "primary_key": report["metadata"].get("primary_key"),
        },
    )
