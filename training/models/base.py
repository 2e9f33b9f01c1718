"""What every family shares: the feature codec, the class condition, the density outputs, and the hooks through
which the pipeline, the training loop and the checkpoint learn what a family needs.

A model's graph methods take and return plain tensors in original units; all randomness enters as
noise tensors, so the same noise always yields the same rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from synthserve.contract import Schema
from training.anomaly import AnomalyScore
from training.neighbors import Neighbors
from training.objectives import LikelihoodObjective, Objective
from training.transform import FeatureCodec, TransformParams

if TYPE_CHECKING:
    from training.train import TrainConfig

__all__ = ["GenerativeModel", "NoiseInput", "class_onehot", "mlp", "split_blocks", "tile_rows"]


@dataclass(frozen=True)
class NoiseInput:
    """A noise input of a graph: drawn by the server per row from `distribution`."""

    name: str
    row_shape: tuple[int, ...]
    distribution: str  # normal | uniform


def mlp(n_in: int, hidden: int, n_out: int, depth: int = 2, activation: type[nn.Module] = nn.SiLU) -> nn.Sequential:
    """`depth` hidden layers of width `hidden`."""
    layers: list[nn.Module] = []
    width = n_in
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), activation()]
        width = hidden
    layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)


def class_onehot(label: Tensor, n_classes: int) -> Tensor:
    """label [B] int64 -> [B, C] float (a comparison, which every exporter handles)."""
    return (label.unsqueeze(1) == torch.arange(n_classes, device=label.device)).float()


def tile_rows(x: Tensor, n: int) -> Tensor:
    """[B, F] -> [B*n, F], each row repeated n times in a row (broadcasting, not Expand: exports reliably)."""
    tiled = x.unsqueeze(1) + torch.zeros(1, n, 1, dtype=x.dtype, device=x.device)
    return tiled.reshape(x.shape[0] * n, x.shape[1])


def split_blocks(values: Tensor, sizes: tuple[int, ...]) -> list[Tensor]:
    """[B, sum K] -> list of [B, K_i] one-hot blocks."""
    out, start = [], 0
    for k in sizes:
        out.append(values[:, start : start + k])
        start += k
    return out


class GenerativeModel(nn.Module):
    """Base of the families. A family's file sets the class attributes below and implements the graph methods it
    supports and the losses its objective calls; `training.models.MODELS` lists the families."""

    family: ClassVar[str]  # the name users pass as --model and the manifest's `family`
    config_class: ClassVar[type[Any]]  # the frozen dataclass of the family's hyperparameters
    # How `training.transform.fit_transform` encodes categorical columns for it: "onehot" or "ordinal".
    categorical_encoding: ClassVar[str]
    density_note: ClassVar[str]  # what its log_prob graph computes, recorded in the manifest's `training`
    log_priors: Tensor

    def __init__(self, config: Any, schema: Schema, transform: TransformParams) -> None:
        super().__init__()
        # What the model was built from, so a checkpoint rebuilds it (`training.checkpoint`).
        self.config = config
        self.schema = schema
        self.transform = transform
        self.codec = FeatureCodec(transform, schema.width)
        self.conditional = schema.label is not None
        self.n_classes = schema.n_classes
        self.n_scalar = transform.n_scalar
        self.onehot_sizes = transform.onehot_sizes
        priors = schema.label.priors if schema.label is not None else (1.0,)
        self.register_buffer("log_priors", torch.log(torch.tensor(priors, dtype=torch.float32)))
        # Set once trained (`training.pipeline.train`): the training rows log_prob holds and the anomaly score made
        # from them; the log_prob graph then also serves the score and, for two or more classes, the class margin.
        self.neighbors: Neighbors | None = None
        self.anomaly: AnomalyScore | None = None

    # --- what the export needs to know -------------------------------------------------------------
    def capabilities(self) -> tuple[str, ...]:
        raise NotImplementedError

    def noise_inputs(self, graph: str) -> tuple[NoiseInput, ...]:
        raise NotImplementedError

    def latent_width(self) -> int:
        raise NotImplementedError

    # --- graph methods ------------------------------------------------------------------------------
    def sample(self, noise: list[Tensor], label: Tensor) -> Tensor:
        """noise tensors (manifest order), label [B] -> rows [B, D]."""
        raise NotImplementedError

    def sample_guided(self, noise: list[Tensor], label: Tensor, guidance: Tensor) -> Tensor:
        """`sample` under classifier-free guidance: guidance [B] float32 is each row's weight w."""
        raise NotImplementedError

    def log_prob_cond(self, rows: Tensor, noise: list[Tensor]) -> Tensor:
        """rows [B, D] -> log p(x | c) [B, C]."""
        raise NotImplementedError

    def encode(self, rows: Tensor, label: Tensor, noise: list[Tensor]) -> Tensor:
        """rows [B, D], label [B] -> latent [B, Z]."""
        raise NotImplementedError

    def class_condition(self, label: Tensor) -> Tensor:
        """label [B] int64 -> the networks' class input [B, C] (one-hot)."""
        return class_onehot(label, self.n_classes)

    def density(self, rows: Tensor, noise: list[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """log p(x) = logsumexp_c(log p(x|c) + log pi_c) [B], log p(x|c) [B, C], p(c|x) [B, C]."""
        cond = self.log_prob_cond(rows, noise)
        joint = cond + self.log_priors
        log_prob = torch.logsumexp(joint, dim=1)
        return log_prob, cond, torch.exp(joint - log_prob.unsqueeze(1))

    # --- training -----------------------------------------------------------------------------------
    @classmethod
    def training_defaults(cls, n_train_rows: int) -> dict[str, Any]:
        """`TrainConfig` fields whose default differs for this family (a request's own settings override them)."""
        return {}

    def objective(self, config: TrainConfig) -> Objective:
        """How the loop optimizes this family: by default one Adam on `training_loss`."""
        return LikelihoodObjective(self, config)

    def training_loss(self, rows: Tensor, label: Tensor) -> Tensor:
        """The scalar a likelihood objective minimizes on a batch (rows [B, D], label [B])."""
        raise NotImplementedError

    def validation_loss(self, rows: Tensor, label: Tensor) -> Tensor:
        """The scalar early stopping watches; `training_loss` unless the family says otherwise."""
        return self.training_loss(rows, label)

    def model_space(self, rows: Tensor, dequant: bool) -> tuple[Tensor, Tensor, Tensor]:
        """rows -> (scalar z [B, S + M + A], log|dz/dx| [B], one-hot [B, sum K]); in training, random dequantization
        and random model-space values for gaps (`FeatureCodec.to_model`)."""
        if not dequant:
            return self.codec.to_model(rows)
        shape = (rows.shape[0], self.n_scalar)
        dequantization = torch.rand(shape, device=rows.device)
        # Only tables with gaps or atoms draw fills, so the noise stream of other tables is as it always was.
        fill = torch.randn(shape, device=rows.device) if self.codec.draws_fills else None
        return self.codec.to_model(rows, dequantization, fill)

    @staticmethod
    def gaussian_log_density(x: Tensor, mean: Tensor, log_scale: Tensor) -> Tensor:
        """Elementwise log N(x; mean, exp(log_scale)^2)."""
        return -0.5 * ((x - mean) * torch.exp(-log_scale)) ** 2 - log_scale - 0.5 * math.log(2 * math.pi)
