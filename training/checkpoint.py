"""A trained model's checkpoint: its weights plus everything that rebuilds it (family, config, schema, transform).

The exported graphs and the manifest are the contract with serving; the checkpoint is training's own record, kept
beside them (git-ignored in the shipped store, left out of the manifest's `files`) so a model can be rebuilt in
eager PyTorch: to fine-tune it, export it again or inspect it. It holds tensors and plain values only, so it loads
with `torch.load(..., weights_only=True)`: loading never runs code from the file.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synthserve.contract import Column, LabelSpec, Schema
from training.anomaly import AnomalyParams, AnomalyScore
from training.models import GenerativeModel, model_class
from training.neighbors import NeighborParams, Neighbors
from training.transform import TransformParams

__all__ = ["CHECKPOINT_FILE", "load_checkpoint", "save_checkpoint"]

CHECKPOINT_FILE = "checkpoint.pt"


def save_checkpoint(model: GenerativeModel, path: Path) -> None:
    """Write `model`'s weights and what it was built from to `path`."""
    torch.save(
        {
            "family": model.family,
            # The reference rows' buffers are rebuilt from their parameters, kept apart (`neighbors`).
            "state_dict": {k: v for k, v in model.state_dict().items() if not k.startswith("neighbors.")},
            "neighbors": None if model.neighbors is None else model.neighbors.params.to_state(),
            "anomaly": None if model.anomaly is None else dataclasses.asdict(model.anomaly.params),
            "family_config": dataclasses.asdict(model.config),
            "transform": {
                k: torch.as_tensor(v) if isinstance(v, np.ndarray) else list(v)
                for k, v in dataclasses.asdict(model.transform).items()
            },
            "schema": dataclasses.asdict(model.schema),
        },
        path,
    )


def load_checkpoint(path: Path) -> GenerativeModel:
    """The model saved at `path`, rebuilt with its weights, in eval mode on the CPU."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    family_class = model_class(checkpoint["family"])
    model = family_class(
        family_class.config_class(**checkpoint["family_config"]),
        _schema(checkpoint["schema"]),
        _transform(checkpoint["transform"]),
    )
    model.load_state_dict(checkpoint["state_dict"])
    if checkpoint.get("neighbors") is not None:
        model.neighbors = Neighbors(NeighborParams.from_state(checkpoint["neighbors"]))
    if checkpoint.get("anomaly") is not None:
        model.anomaly = AnomalyScore(AnomalyParams(**checkpoint["anomaly"]))
    return model.eval()


def _transform(saved: dict[str, Any]) -> TransformParams:
    """Arrays were saved as tensors (float64 kept), tuples as lists."""
    fields: dict[str, Any] = {k: v.numpy() if isinstance(v, torch.Tensor) else tuple(v) for k, v in saved.items()}
    return TransformParams(**fields)


def _schema(saved: dict[str, Any]) -> Schema:
    """`dataclasses.asdict` of a Schema back to the dataclasses (tuples come back as tuples)."""
    label = saved["label"]
    return Schema(
        tuple(Column(**column) for column in saved["columns"]),
        LabelSpec(**label) if label is not None else None,
        saved["image_shape"],
    )
