"""One file per model family; `build_model` is the single constructor the trainer and export use."""

from __future__ import annotations

from typing import Any

from synthserve.contract import Schema
from training.models.base import GenerativeModel, NoiseInput
from training.models.flow import FlowConfig, FlowModel
from training.models.gan import GANConfig, GANModel
from training.models.vae import VAEConfig, VAEModel
from training.transform import TransformParams

__all__ = [
    "CATEGORICAL_ENCODING",
    "CONFIGS",
    "FAMILIES",
    "FlowConfig",
    "FlowModel",
    "GANConfig",
    "GANModel",
    "GenerativeModel",
    "NoiseInput",
    "VAEConfig",
    "VAEModel",
    "build_model",
]

FAMILIES = ("vae", "gan", "flow")
CONFIGS: dict[str, type] = {"vae": VAEConfig, "gan": GANConfig, "flow": FlowConfig}
# Flows need a continuous space (categories dequantized as ordinal codes); VAE and GAN model one-hot blocks.
CATEGORICAL_ENCODING = {"vae": "onehot", "gan": "onehot", "flow": "ordinal"}


def build_model(family: str, config: Any, schema: Schema, transform: TransformParams) -> GenerativeModel:
    """Instantiate a family's network around the fitted feature transform."""
    if family == "flow":
        return FlowModel(config, schema, transform)
    if family == "vae":
        return VAEModel(config, schema, transform)
    if family == "gan":
        return GANModel(config, schema, transform)
    raise ValueError(f"--model {family!r}: unknown family (expected one of {FAMILIES})")
