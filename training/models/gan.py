"""Conditional WGAN-GP: categorical outputs through Gumbel-softmax in training, Gumbel-max when sampling.

No density. `encode` returns the critic's last hidden layer: a discriminative embedding of the row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from synthserve.contract import Schema
from training.losses import gan_critic_loss, gan_generator_loss, moment_distance
from training.models.base import GenerativeModel, NoiseInput, class_onehot, mlp, split_blocks
from training.objectives import AdversarialObjective
from training.transform import TransformParams

if TYPE_CHECKING:
    from training.train import TrainConfig

__all__ = ["GAN_MIN_BATCH", "GAN_STEPS_PER_EPOCH", "GANConfig", "GANModel"]

# Adversarial training needs thousands of generator updates and its (noisier) validation loss more patience: the
# GAN runs GAN_STEPS_PER_EPOCH steps per epoch (batches of at least GAN_MIN_BATCH rows), so its cost is bounded by
# the epoch count whatever the table's size.
GAN_STEPS_PER_EPOCH = 10
GAN_MIN_BATCH = 128


@dataclass(frozen=True)
class GANConfig:
    latent: int = 32
    hidden: int = 128
    critic_steps: int = 1  # critic updates per generator update
    gradient_penalty: float = 10.0
    gumbel_temperature: float = 0.5


class GANModel(GenerativeModel):
    family = "gan"
    config_class = GANConfig
    categorical_encoding = "onehot"  # Gumbel-softmax blocks in training, Gumbel-max when sampling
    density_note = "no density (WGAN-GP)"

    def __init__(self, config: GANConfig, schema: Schema, transform: TransformParams) -> None:
        super().__init__(config, schema, transform)
        self.latent = config.latent
        self.temperature = config.gumbel_temperature
        self.critic_steps = config.critic_steps
        self.gradient_penalty = config.gradient_penalty
        width = transform.model_width
        self.generator = mlp(config.latent + self.n_classes, config.hidden, width, depth=3, activation=nn.ReLU)
        # Projection critic (Miyato & Koyama 2018): D(x, c) = w.h(x) + e_c.h(x), a strong class signal.
        self.critic_body = nn.Sequential(
            mlp(width, config.hidden, config.hidden, depth=2, activation=nn.LeakyReLU), nn.LeakyReLU()
        )
        self.critic_head = nn.Linear(config.hidden, 1)
        self.class_embedding = nn.Linear(self.n_classes, config.hidden, bias=False)
        self.hidden = config.hidden

    def capabilities(self) -> tuple[str, ...]:
        return ("sample", "encode")

    def noise_inputs(self, graph: str) -> tuple[NoiseInput, ...]:
        if graph != "sample":
            return ()
        noise = [NoiseInput("z", (self.latent,), "normal")]
        if self.onehot_sizes:
            noise.append(NoiseInput("gumbel", (sum(self.onehot_sizes),), "uniform"))
        return tuple(noise)

    def latent_width(self) -> int:
        return self.hidden

    # --- training -----------------------------------------------------------------------------------
    @classmethod
    def training_defaults(cls, n_train_rows: int) -> dict[str, Any]:
        return {
            "patience": 100,
            "epochs": 400,
            "batch_size": max(GAN_MIN_BATCH, -(-n_train_rows // GAN_STEPS_PER_EPOCH)),
        }

    def objective(self, config: TrainConfig) -> AdversarialObjective:
        return AdversarialObjective(self, config)

    def generator_parameters(self) -> list[nn.Parameter]:
        return list(self.generator.parameters())

    def critic_parameters(self) -> list[nn.Parameter]:
        return [*self.critic_body.parameters(), *self.critic_head.parameters(), *self.class_embedding.parameters()]

    def critic_loss(self, rows: Tensor, label: Tensor) -> Tensor:
        return gan_critic_loss(self, rows, label, self.gradient_penalty)

    def generator_loss(self, label: Tensor) -> Tensor:
        return gan_generator_loss(self, label)

    def validation_loss(self, rows: Tensor, label: Tensor) -> Tensor:
        """Moment distance, not the critic's Wasserstein estimate (see `training.losses.moment_distance`)."""
        return moment_distance(self, rows, label)

    # --- networks -----------------------------------------------------------------------------------
    def generate(self, z: Tensor, cond: Tensor) -> tuple[Tensor, Tensor]:
        """Generator output: scalar columns [B, S] and category logits [B, sum K]."""
        out = self.generator(torch.cat([z, cond], dim=1))
        return out[:, : self.n_scalar], out[:, self.n_scalar :]

    def relaxed_fake(self, z: Tensor, cond: Tensor) -> Tensor:
        """Differentiable fake rows in model space: Gumbel-softmax over each category block."""
        scalar, logits = self.generate(z, cond)
        blocks = [F.gumbel_softmax(b, tau=self.temperature) for b in split_blocks(logits, self.onehot_sizes)]
        return torch.cat([scalar, *blocks], dim=1)

    def critic(self, x_model: Tensor, cond: Tensor) -> Tensor:
        features = self.critic_body(x_model)
        return self.critic_head(features).squeeze(1) + (self.class_embedding(cond) * features).sum(1)

    def sample(self, noise: list[Tensor], label: Tensor) -> Tensor:
        cond = class_onehot(label, self.n_classes)
        scalar, logits = self.generate(noise[0], cond)
        codes = None
        if self.onehot_sizes:
            gumbel = -torch.log(-torch.log(noise[1]))
            perturbed = split_blocks(logits + gumbel, self.onehot_sizes)
            codes = torch.stack([block.argmax(dim=1) for block in perturbed], dim=1).float()
        return self.codec.from_model(scalar, codes)

    def encode(self, rows: Tensor, label: Tensor, noise: list[Tensor]) -> Tensor:
        scalar, _, onehot = self.codec.to_model(rows)
        del label  # the projection critic's features do not depend on the class
        return self.critic_body(torch.cat([scalar, onehot], dim=1))
