"""One file per model family; `MODELS` is the one place the families are listed.

A family's file holds everything about it (config, training defaults, categorical encoding, density note,
objective: see `GenerativeModel`), so a new family is a new file and one entry in `MODELS`.
"""

from __future__ import annotations

from typing import Any

from synthserve.contract import Schema
from training.models.autoregressive import AutoregressiveConfig, AutoregressiveModel
from training.models.base import GenerativeModel, NoiseInput
from training.models.diffusion import DiffusionConfig, DiffusionModel
from training.models.flow import FlowConfig, FlowModel
from training.models.gan import GANConfig, GANModel
from training.models.vae import VAEConfig, VAEModel
from training.transform import TransformParams

__all__ = [
    "FAMILIES",
    "MODELS",
    "AutoregressiveConfig",
    "AutoregressiveModel",
    "DiffusionConfig",
    "DiffusionModel",
    "FlowConfig",
    "FlowModel",
    "GANConfig",
    "GANModel",
    "GenerativeModel",
    "NoiseInput",
    "VAEConfig",
    "VAEModel",
    "build_model",
    "model_class",
]

MODELS: dict[str, type[GenerativeModel]] = {
    model.family: model for model in (VAEModel, GANModel, FlowModel, AutoregressiveModel, DiffusionModel)
}
FAMILIES = tuple(MODELS)  # the --model choices, in this order


def model_class(family: str) -> type[GenerativeModel]:
    """The class of a family, by the name users pass as --model."""
    if family not in MODELS:
        raise ValueError(f"--model {family!r}: unknown family (expected one of {FAMILIES})")
    return MODELS[family]


def build_model(family: str, config: Any, schema: Schema, transform: TransformParams) -> GenerativeModel:
    """Instantiate a family's network around the fitted feature transform."""
    return model_class(family)(config, schema, transform)
