"""`synthserve evaluate`: re-run the evaluation of a published version, without touching the version.

A published version is immutable: its manifest and the files its checksums list are never rewritten. Each
evaluation adds a record `evaluation-<UTC time>.json` to the version directory (metrics, calibration, the
manifest's sha256 it was computed against) and, beside it, a folder of the same name with report.json and plots.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import shutil
import uuid
from pathlib import Path

import synthserve
from synthserve.contract import Manifest, load_manifest, model_versions, sha256_file
from synthserve.contract.manifest import MANIFEST_FILE
from training.data import Prepared, prepare_data
from training.evaluate import REPORT_FILE, evaluate_prepared
from training.exported import ExportedModel

__all__ = ["EVALUATION_PREFIX", "evaluate_published", "prepare_version_data"]

EVALUATION_PREFIX = "evaluation-"  # evaluation-<UTC time>.json, with its report folder of the same name


def evaluate_published(model_store: Path, name: str, version: int | None = None) -> Path:
    """Re-run the evaluation of a published version (latest by default); returns the new evaluation record."""
    parent = model_store / name
    if not parent.is_dir():
        raise FileNotFoundError(f"--name {name!r}: no such model in {model_store}")
    versions = model_versions(parent)
    if not versions:
        raise FileNotFoundError(f"--name {name!r}: no published version in {parent}")
    if version is not None and version not in versions:
        published = ", ".join(map(str, versions))
        raise FileNotFoundError(f"--version {version}: {name!r} has no such version (published: {published})")
    directory = parent / str(version if version is not None else versions[-1])
    manifest = load_manifest(directory)
    _check_training_data(str(manifest.training["data"]), directory)
    prepared = prepare_version_data(manifest)
    report = directory / REPORT_FILE
    history = json.loads(report.read_text()).get("history") if report.exists() else None
    return _write_evaluation(directory, prepared, history)


def prepare_version_data(manifest: Manifest) -> Prepared:
    """The data a version was trained on, split and encoded as its training split it (manifest.training)."""
    training = manifest.training
    return prepare_data(
        training["data"],
        training.get("label"),
        bool(training.get("impute")),
        int(training["seed"]),
        training.get("column_kinds"),
    )


def _check_training_data(source: str, directory: Path) -> None:
    """The data a version was trained on is read again: say which, and where it was looked for, when it is gone."""
    kind, _, rest = source.partition(":")
    if kind in ("sklearn", "keel") and rest:
        return
    if not Path(source).exists():
        relative = "" if Path(source).is_absolute() else f", looked up from {Path.cwd()}"
        raise FileNotFoundError(
            f"training.data {source!r} of {directory / MANIFEST_FILE}: no such file{relative} "
            "(the data this version was trained on has moved or gone)"
        )


def _write_evaluation(directory: Path, prepared: Prepared, history: dict[str, list[float]] | None) -> Path:
    """Evaluates into a staging folder, renames it to evaluation-<UTC time>, then writes the record beside it."""
    manifest_sha256 = sha256_file(directory / MANIFEST_FILE)
    staging = directory / f".{EVALUATION_PREFIX}{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        model = ExportedModel(directory)
        model.directory = staging  # evaluate_version writes its report and plots into the model's directory
        evaluation = evaluate_prepared(model, prepared, history, plots=True)
        now = datetime.datetime.now(datetime.UTC)
        stem = f"{EVALUATION_PREFIX}{now.strftime('%Y%m%dT%H%M%SZ')}"
        attempt = 0
        while True:  # two evaluations within one second: evaluation-<time>-2, ...
            attempt += 1
            folder = directory / (stem if attempt == 1 else f"{stem}-{attempt}")
            if folder.exists() or folder.with_suffix(".json").exists():
                continue
            try:
                os.rename(staging, folder)
            except OSError:
                if folder.exists():  # another evaluation took the name meanwhile
                    continue
                raise
            break
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    record = {
        "evaluated_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "manifest_sha256": manifest_sha256,
        "synthserve_version": synthserve.__version__,
        "data": prepared.dataset.source,
        "report": f"{folder.name}/{REPORT_FILE}",
        "files": [f"{folder.name}/{file}" for file in evaluation.files],
        "metrics": evaluation.metrics,
        "calibration": None if evaluation.calibration is None else dataclasses.asdict(evaluation.calibration),
    }
    path = folder.with_suffix(".json")
    temporary = directory / f".{path.name}.tmp"
    temporary.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(temporary, path)
    return path
