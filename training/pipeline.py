"""Data -> trained model -> exported, checked, evaluated version published atomically in the model store.

Everything a family decides (its config, training defaults, categorical encoding, density note) comes from its
class (`training.models`); this module only puts the steps in order.
"""

from __future__ import annotations

import dataclasses
import datetime
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
from synthserve.contract import Manifest
from synthserve.contract.manifest import MANIFEST_FILE
from training.anomaly import fit_anomaly_score
from training.checkpoint import CHECKPOINT_FILE, save_checkpoint
from training.data import Prepared, prepare_data
from training.evaluate import evaluate_prepared
from training.export import export_graphs
from training.exported import ExportedModel
from training.gate import QualityGateError
from training.graphs import eager_log_density, graph_specs
from training.models import GenerativeModel, model_class
from training.neighbors import Neighbors, fit_neighbors
from training.publish import publish
from training.train import TrainConfig, TrainResult, train_model
from training.transform import fit_transform

__all__ = ["TrainRequest", "Trained", "train", "train_and_publish"]


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
    # log_prob holds up to 4,096 training rows (training/neighbors.py) for the anomaly score and the class margin;
    # False leaves them out: no training row is in the files, ScoreDensity flags on log p(x) and best-of-k ranks
    # by the posterior.
    reference_rows: bool = True
    family_config: dict[str, Any] = dataclasses.field(default_factory=dict)  # overrides of the family's defaults
    train_config: dict[str, Any] = dataclasses.field(default_factory=dict)  # overrides of TrainConfig fields


@dataclass(frozen=True)
class Trained:
    """A trained model with its data and how it was trained, before export (`train`)."""

    model: GenerativeModel
    prepared: Prepared
    result: TrainResult
    train_config: TrainConfig


def train(request: TrainRequest) -> Trained:
    """Load and split the data, fit the feature transform, train the family (data-parallel under torchrun)."""
    torch.manual_seed(request.seed)
    np.random.seed(request.seed)
    prepared = prepare_data(request.data, request.label, request.impute, request.seed, request.column_kinds)
    for note in prepared.dataset.notes:  # columns left out or changed: the user must hear of them
        print(f"note: {note}", file=sys.stderr)
    split, schema = prepared.split, prepared.schema
    family_class = model_class(request.family)
    family_config = family_class.config_class(**request.family_config)
    transform = fit_transform(
        prepared.rows[split.train], schema, categorical=family_class.categorical_encoding, seed=request.seed
    )
    torch.manual_seed(request.seed)
    model = family_class(family_config, schema, transform)
    # The family's defaults, then the request's own settings over them.
    overrides = family_class.training_defaults(len(split.train))
    overrides.update(request.train_config)
    if request.epochs is not None:
        overrides["epochs"] = request.epochs
    train_config = TrainConfig(seed=request.seed, device=request.device, progress=request.progress, **overrides)

    def part(index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(prepared.rows[index]), torch.from_numpy(prepared.labels[index])

    result = train_model(model, part(split.train), part(split.validation), train_config)
    if request.reference_rows and "log_prob" in model.capabilities():
        train_rows, train_labels = prepared.rows[split.train], prepared.labels[split.train]
        neighbors = Neighbors(fit_neighbors(schema, train_rows, train_labels, model.n_classes, request.seed))
        model.anomaly = fit_anomaly_score(
            lambda rows: eager_log_density(model, rows, request.seed), neighbors, prepared.rows[split.validation]
        )
        model.neighbors = neighbors.to(model.log_priors.device)
    return Trained(model, prepared, result, train_config)


def train_and_publish(request: TrainRequest) -> Path | None:
    """Train, export, check, evaluate and publish; returns the version directory (None on non-zero ranks)."""
    trained = train(request)
    if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
        return None
    parent = request.model_store / request.name
    parent.mkdir(parents=True, exist_ok=True)
    staging = parent / f".tmp-{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        return _export_and_publish(
            trained.model, request, trained.train_config, trained.result, trained.prepared, staging
        )
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _export_and_publish(
    model: GenerativeModel,
    request: TrainRequest,
    train_config: TrainConfig,
    result: TrainResult,
    prepared: Prepared,
    staging: Path,
) -> Path:
    started = time.perf_counter()
    parity = export_graphs(model, prepared.schema, staging, seed=request.seed, exporter=request.onnx_exporter)
    export_seconds = time.perf_counter() - started
    save_checkpoint(model, staging / CHECKPOINT_FILE)
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
        family=model.family,
        schema=prepared.schema,
        graphs=graph_specs(model, prepared.schema),
        created_at=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        synthserve_version=synthserve.__version__,
        torchscript="model.pt",
        metrics=metrics,
        training=_training_record(model, request, train_config, prepared),
    )
    (staging / MANIFEST_FILE).write_text(manifest.to_json())
    manifest = _evaluated(manifest, staging, prepared, result.history, request.plots, request.accept_weak)
    return publish(staging, manifest)


def _training_record(
    model: GenerativeModel, request: TrainRequest, train_config: TrainConfig, prepared: Prepared
) -> dict[str, Any]:
    """The manifest's `training`: how the version was made, enough to make it again."""
    return {
        "data": str(Path(request.data).resolve()) if Path(request.data).exists() else request.data,
        "label": prepared.schema.label.name if prepared.schema.label else None,
        "seed": request.seed,
        "impute": request.impute,
        "column_kinds": dict(request.column_kinds),
        "notes": list(prepared.dataset.notes),
        "family_config": dataclasses.asdict(model.config),
        "train_config": dataclasses.asdict(train_config),
        "transform": {"knots": int(model.transform.x_knots.shape[1]), "categorical": model.categorical_encoding},
        "split": {
            "train": len(prepared.split.train),
            "validation": len(prepared.split.validation),
            "heldout": len(prepared.split.heldout),
        },
        "density_note": model.density_note,
        "torch_version": torch.__version__,
    }


def _evaluated(
    manifest: Manifest,
    directory: Path,
    prepared: Prepared,
    history: dict[str, list[float]] | None,
    plots: bool,
    accept_weak: bool = False,
) -> Manifest:
    """The staged version's manifest with evaluation metrics and calibration; QualityGateError when the quality
    gate refuses the model and `accept_weak` does not override it."""
    evaluation = evaluate_prepared(ExportedModel(directory), prepared, history, plots, accept_weak)
    gate = evaluation.metrics["quality_gate"]
    if not gate["passed"] and not accept_weak:
        raise QualityGateError(manifest.name, gate["reasons"])
    return dataclasses.replace(
        manifest, metrics={**manifest.metrics, **evaluation.metrics}, calibration=evaluation.calibration
    )
