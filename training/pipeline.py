"""Data -> trained model -> exported, checked, evaluated version published atomically in the model store."""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import shutil
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

import synthserve
from synthserve.contract import Manifest, Schema, load_manifest, model_versions, sha256_file
from synthserve.contract.manifest import MANIFEST_FILE
from training.data import Dataset, Split, build_schema, encode_labels, encode_rows, load_dataset, split_dataset
from training.evaluate import Evaluation, evaluate_version
from training.export import export_graphs, graph_specs
from training.exported import ExportedModel
from training.gate import QualityGateError
from training.models import CATEGORICAL_ENCODING, CONFIGS, GenerativeModel, build_model
from training.train import TrainConfig, TrainResult, train_model
from training.transform import TransformParams, fit_transform

__all__ = [
    "CHECKPOINT_FILE",
    "DENSITY_NOTES",
    "FAMILY_TRAINING",
    "TrainRequest",
    "evaluate_published",
    "publish",
    "train_and_publish",
]

CHECKPOINT_FILE = "checkpoint.pt"
DENSITY_NOTES = {
    "flow": (
        "exact log-density of the dequantized rows in original units; integer columns and categorical codes "
        "(ordinally dequantized) are scored at the cell midpoint x + 0.5, a one-point estimate of log P(x)"
    ),
    "vae": (
        "importance-weighted bound (IWAE, K = importance samples); continuous columns: Gaussian decoder density "
        "in original units through the quantile transform; integer columns at the cell midpoint x + 0.5; "
        "categorical columns: exact categorical probability"
    ),
    "gan": "no density (WGAN-GP)",
}

# Training defaults that differ per family. Adversarial training needs thousands of generator updates and
# its (noisier) validation loss more patience: the GAN runs GAN_STEPS_PER_EPOCH steps per epoch (batches of
# at least 128 rows), so its cost is bounded by the epoch count whatever the table's size.
FAMILY_TRAINING: dict[str, dict[str, Any]] = {
    "flow": {},
    "vae": {},
    "gan": {"patience": 100, "epochs": 400},
}
GAN_STEPS_PER_EPOCH = 10
GAN_MIN_BATCH = 128


@dataclass(frozen=True)
class TrainRequest:
    data: str
    family: str
    name: str
    model_store: Path
    label: str | None = None
    seed: int = 0
    epochs: int | None = None  # None: the TrainConfig default
    device: str = "cpu"
    impute: bool = False
    column_kinds: dict[str, str] = dataclasses.field(default_factory=dict)  # overrides of inferred kinds
    progress: bool = True
    onnx_exporter: str = "dynamo"  # training.export.ONNX_EXPORTERS
    plots: bool = True  # the report's PNG plots (report.json is always written)
    accept_weak: bool = False  # publish a model the quality gate refuses (training.gate); the verdict stays in metrics
    family_config: dict[str, Any] = dataclasses.field(default_factory=dict)  # overrides of the family's defaults
    train_config: dict[str, Any] = dataclasses.field(default_factory=dict)  # overrides of TrainConfig fields


@dataclass(frozen=True)
class _Prepared:
    dataset: Dataset
    split: Split
    schema: Schema
    rows: np.ndarray
    labels: np.ndarray


def _prepare(data: str, label: str | None, impute: bool, seed: int, kinds: dict[str, str] | None = None) -> _Prepared:
    dataset = load_dataset(data, label, impute=impute, kinds=kinds)
    split = split_dataset(dataset, seed)
    schema = build_schema(dataset, split.train)
    rows = encode_rows(dataset.features, schema)
    labels = encode_labels(dataset.labels, schema) if dataset.labels is not None else np.zeros(len(rows), np.int64)
    return _Prepared(dataset, split, schema, rows, labels)


def _listed_files(directory: Path) -> dict[str, str]:
    return {
        p.name: sha256_file(p)
        for p in sorted(directory.iterdir())
        if p.is_file() and p.name not in (MANIFEST_FILE, CHECKPOINT_FILE)
    }


def _next_version(parent: Path) -> int:
    return max(model_versions(parent), default=0) + 1


def publish(staging: Path, manifest: Manifest) -> Path:
    """Rename the staging directory to the next free integer version (retrying if another writer won)."""
    parent = staging.parent
    while True:
        version = _next_version(parent)
        final = dataclasses.replace(manifest, version=version, files=_listed_files(staging))
        (staging / MANIFEST_FILE).write_text(final.to_json())
        try:
            os.rename(staging, parent / str(version))
        except OSError:
            if (parent / str(version)).exists():
                continue
            raise
        return parent / str(version)


def _checkpoint(
    model: GenerativeModel, transform: TransformParams, request: TrainRequest, config: Any
) -> dict[str, Any]:
    """Tensors and plain values only, so it loads with torch.load(..., weights_only=True)."""
    return {
        "family": request.family,
        "state_dict": model.state_dict(),
        "family_config": dataclasses.asdict(config),
        "transform": {
            k: torch.as_tensor(v) if isinstance(v, np.ndarray) else list(v)
            for k, v in dataclasses.asdict(transform).items()
        },
    }


def train_and_publish(request: TrainRequest) -> Path | None:
    """Train, export, check, evaluate and publish; returns the version directory (None on non-zero ranks)."""
    torch.manual_seed(request.seed)
    np.random.seed(request.seed)
    prepared = _prepare(request.data, request.label, request.impute, request.seed, request.column_kinds)
    for note in prepared.dataset.notes:  # columns left out or changed: the user must hear of them
        print(f"note: {note}", file=sys.stderr)
    split, schema = prepared.split, prepared.schema
    family_config = CONFIGS[request.family](**request.family_config)
    transform = fit_transform(
        prepared.rows[split.train], schema, categorical=CATEGORICAL_ENCODING[request.family], seed=request.seed
    )
    torch.manual_seed(request.seed)
    model = build_model(request.family, family_config, schema, transform)
    overrides = dict(FAMILY_TRAINING[request.family])
    if request.family == "gan":
        overrides["batch_size"] = max(GAN_MIN_BATCH, -(-len(split.train) // GAN_STEPS_PER_EPOCH))
    overrides.update(request.train_config)
    if request.epochs is not None:
        overrides["epochs"] = request.epochs
    train_config = TrainConfig(seed=request.seed, device=request.device, progress=request.progress, **overrides)

    def part(index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(prepared.rows[index]), torch.from_numpy(prepared.labels[index])

    result = train_model(model, part(split.train), part(split.validation), train_config)
    if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
        return None
    parent = request.model_store / request.name
    parent.mkdir(parents=True, exist_ok=True)
    staging = parent / f".tmp-{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        return _export_and_publish(model, transform, request, family_config, train_config, result, prepared, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _export_and_publish(
    model: GenerativeModel,
    transform: TransformParams,
    request: TrainRequest,
    family_config: Any,
    train_config: TrainConfig,
    result: TrainResult,
    prepared: _Prepared,
    staging: Path,
) -> Path:
    started = time.perf_counter()
    parity = export_graphs(model, prepared.schema, staging, seed=request.seed, exporter=request.onnx_exporter)
    export_seconds = time.perf_counter() - started
    torch.save(_checkpoint(model, transform, request, family_config), staging / CHECKPOINT_FILE)
    training = {
        "data": str(Path(request.data).resolve()) if Path(request.data).exists() else request.data,
        "label": prepared.schema.label.name if prepared.schema.label else None,
        "seed": request.seed,
        "impute": request.impute,
        "column_kinds": dict(request.column_kinds),
        "notes": list(prepared.dataset.notes),
        "family_config": dataclasses.asdict(family_config),
        "train_config": dataclasses.asdict(train_config),
        "transform": {"knots": int(transform.x_knots.shape[1]), "categorical": CATEGORICAL_ENCODING[request.family]},
        "split": {
            "train": len(prepared.split.train),
            "validation": len(prepared.split.validation),
            "heldout": len(prepared.split.heldout),
        },
        "density_note": DENSITY_NOTES[request.family],
        "torch_version": torch.__version__,
    }
    metrics = {
        "training_seconds": round(result.seconds, 3),
        "training_cpu_seconds": round(result.cpu_seconds, 3),
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "best_validation_loss": result.best_validation_loss,
        "export_parity": parity,
        "export_seconds": round(export_seconds, 3),
    }
    manifest = Manifest(
        name=request.name,
        version=1,  # provisional; publish() sets the final version
        family=request.family,
        schema=prepared.schema,
        graphs=graph_specs(model, prepared.schema),
        created_at=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        synthserve_version=synthserve.__version__,
        torchscript="model.pt",
        metrics=metrics,
        training=training,
    )
    (staging / MANIFEST_FILE).write_text(manifest.to_json())
    manifest = _evaluated(manifest, staging, prepared, result.history, request.plots, request.accept_weak)
    return publish(staging, manifest)


def _evaluate(
    model: ExportedModel,
    prepared: _Prepared,
    history: dict[str, list[float]] | None,
    plots: bool,
    accept_weak: bool = False,
) -> Evaluation:
    """Evaluate a version on the held-out rows, with the training rows for privacy and utility."""
    heldout, train = prepared.split.heldout, prepared.split.train
    return evaluate_version(
        model,
        prepared.rows[heldout],
        prepared.labels[heldout],
        history,
        plots=plots,
        train_rows=prepared.rows[train],
        train_labels=prepared.labels[train],
        accept_weak=accept_weak,
    )


def _evaluated(
    manifest: Manifest,
    directory: Path,
    prepared: _Prepared,
    history: dict[str, list[float]] | None,
    plots: bool,
    accept_weak: bool = False,
) -> Manifest:
    """The staged version's manifest with evaluation metrics and calibration; QualityGateError when the quality
    gate refuses the model and `accept_weak` does not override it."""
    evaluation = _evaluate(ExportedModel(directory), prepared, history, plots, accept_weak)
    gate = evaluation.metrics["quality_gate"]
    if not gate["passed"] and not accept_weak:
        raise QualityGateError(manifest.name, gate["reasons"])
    return dataclasses.replace(
        manifest, metrics={**manifest.metrics, **evaluation.metrics}, calibration=evaluation.calibration
    )


EVALUATION_PREFIX = "evaluation-"  # evaluation-<UTC time>.json, with its report folder of the same name


def evaluate_published(model_store: Path, name: str, version: int | None = None) -> Path:
    """Re-run the evaluation of a published version (latest by default); returns the new evaluation record.

    A published version is immutable: its manifest and the files its checksums list are never rewritten. Each
    evaluation adds a record `evaluation-<UTC time>.json` to the version directory (metrics, calibration, the
    manifest's sha256 it was computed against) and, beside it, a folder of the same name with report.json and plots.
    """
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
    training = manifest.training
    _check_training_data(str(training["data"]), directory)
    prepared = _prepare(
        training["data"],
        training.get("label"),
        bool(training.get("impute")),
        int(training["seed"]),
        training.get("column_kinds"),
    )
    report = directory / "report.json"
    history = json.loads(report.read_text()).get("history") if report.exists() else None
    return _write_evaluation(directory, prepared, history)


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


def _write_evaluation(directory: Path, prepared: _Prepared, history: dict[str, list[float]] | None) -> Path:
    """Evaluates into a staging folder, renames it to evaluation-<UTC time>, then writes the record beside it."""
    manifest_sha256 = sha256_file(directory / MANIFEST_FILE)
    staging = directory / f".{EVALUATION_PREFIX}{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        model = ExportedModel(directory)
        model.directory = staging  # evaluate_version writes its report and plots into the model's directory
        evaluation = _evaluate(model, prepared, history, plots=True)
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
        "report": f"{folder.name}/report.json",
        "files": [f"{folder.name}/{file}" for file in evaluation.files],
        "metrics": evaluation.metrics,
        "calibration": None if evaluation.calibration is None else dataclasses.asdict(evaluation.calibration),
    }
    path = folder.with_suffix(".json")
    temporary = directory / f".{path.name}.tmp"
    temporary.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(temporary, path)
    return path
