"""Conditional VAE with type-aware decoder likelihoods and an importance-weighted density.

Decoder: Gaussian per scalar column (continuous, dequantized integers/pixels) in the normalized space,
categorical (softmax) per one-hot block. Density: the IWAE bound with K importance samples that enter the
log_prob graph as a noise input `eps` [B, K, Z], so scores are reproducible from the request's seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from synthserve.contract import Schema
from training.losses import vae_negative_elbo
from training.models.base import GenerativeModel, NoiseInput, class_onehot, mlp, split_blocks, tile_rows
from training.transform import TransformParams

__all__ = ["VAEConfig", "VAEModel"]

MIN_LOG_SCALE = -4.0
MAX_LOG_SCALE = 2.0


@dataclass(frozen=True)
class VAEConfig:
    latent: int = 16
    hidden: int = 128
    importance_samples: int = 64  # K of the IWAE density in the log_prob graph
    beta: float = 1.0


class VAEModel(GenerativeModel):
    family = "vae"
    config_class = VAEConfig
    categorical_encoding = "onehot"  # a categorical decoder likelihood per one-hot block
    density_note = (
        "importance-weighted bound (IWAE, K = importance samples); continuous columns: Gaussian decoder density "
        "in original units through the quantile transform; integer columns at the cell midpoint x + 0.5; "
        "categorical columns: exact categorical probability"
    )

    def __init__(self, config: VAEConfig, schema: Schema, transform: TransformParams) -> None:
        super().__init__(config, schema, transform)
        self.latent = config.latent
        self.importance_samples = config.importance_samples
        self.beta = config.beta
        width = transform.model_width
        self.encoder = mlp(width + self.n_classes, config.hidden, 2 * config.latent)
        self.decoder = mlp(config.latent + self.n_classes, config.hidden, 2 * self.n_scalar + sum(self.onehot_sizes))

    def capabilities(self) -> tuple[str, ...]:
        return ("sample", "log_prob", "encode")

    def noise_inputs(self, graph: str) -> tuple[NoiseInput, ...]:
        if graph == "sample":
            noise = [NoiseInput("z", (self.latent,), "normal")]
            if self.n_scalar:
                noise.append(NoiseInput("eps", (self.n_scalar,), "normal"))
            if self.onehot_sizes:
                noise.append(NoiseInput("gumbel", (sum(self.onehot_sizes),), "uniform"))
            return tuple(noise)
        if graph == "log_prob":
            return (NoiseInput("eps", (self.importance_samples, self.latent), "normal"),)
        return ()

    def latent_width(self) -> int:
        return self.latent

    def training_loss(self, rows: Tensor, label: Tensor) -> Tensor:
        return vae_negative_elbo(self, rows, label, self.beta)

    # --- networks -----------------------------------------------------------------------------------
    def posterior_params(self, scalar: Tensor, onehot: Tensor, cond: Tensor) -> tuple[Tensor, Tensor]:
        """q(z | x, c): mean and log-std [B, Z]."""
        mean, log_std = self.encoder(torch.cat([scalar, onehot, cond], dim=1)).chunk(2, dim=1)
        return mean, log_std.clamp(MIN_LOG_SCALE, MAX_LOG_SCALE)

    def decode(self, z: Tensor, cond: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """p(x | z, c): scalar means and log-scales [B, S], category logits [B, sum K]."""
        out = self.decoder(torch.cat([z, cond], dim=1))
        s = self.n_scalar
        return out[:, :s], out[:, s : 2 * s].clamp(MIN_LOG_SCALE, MAX_LOG_SCALE), out[:, 2 * s :]

    def reconstruction_log_prob(self, scalar: Tensor, onehot: Tensor, z: Tensor, cond: Tensor) -> Tensor:
        """log p(x | z, c) [B] in the normalized space (Gaussian + categorical terms)."""
        mean, log_scale, logits = self.decode(z, cond)
        if self.n_scalar:
            total = self.gaussian_log_density(scalar, mean, log_scale).sum(1)
        else:  # all-categorical tables: no zero-width tensors in the exported graph
            total = torch.zeros_like(z[:, 0])
        for block, block_logits in zip(
            split_blocks(onehot, self.onehot_sizes), split_blocks(logits, self.onehot_sizes)
        ):
            total = total + (block * torch.log_softmax(block_logits, dim=1)).sum(1)
        return total

    # --- graph methods ------------------------------------------------------------------------------
    def sample(self, noise: list[Tensor], label: Tensor) -> Tensor:
        cond = class_onehot(label, self.n_classes)
        mean, log_scale, logits = self.decode(noise[0], cond)
        position = 1
        scalar = mean
        if self.n_scalar:
            scalar = mean + torch.exp(log_scale) * noise[position]
            position += 1
        codes = None
        if self.onehot_sizes:
            gumbel = -torch.log(-torch.log(noise[position]))
            perturbed = split_blocks(logits + gumbel, self.onehot_sizes)
            codes = torch.stack([block.argmax(dim=1) for block in perturbed], dim=1).float()
        return self.codec.from_model(scalar, codes)

    def log_prob_cond(self, rows: Tensor, noise: list[Tensor]) -> Tensor:
        """IWAE: log (1/K) sum_k p(x, z_k | c) / q(z_k | x, c), z_k = mu + sigma * eps_k, per class."""
        scalar, log_det, onehot = self.codec.to_model(rows)
        eps = noise[0]  # [B, K, Z]
        batch, k = eps.shape[0], eps.shape[1]
        per_class = []
        # Classes one after another (unrolled in the graph) keep memory at B*K rows, not B*C*K.
        for c in range(self.n_classes):
            label = torch.full((batch,), c, dtype=torch.long, device=rows.device)
            cond = class_onehot(label, self.n_classes)
            mean, log_std = self.posterior_params(scalar, onehot, cond)
            z = mean.unsqueeze(1) + torch.exp(log_std).unsqueeze(1) * eps  # [B, K, Z]
            log_q = (-0.5 * eps**2 - log_std.unsqueeze(1) - 0.5 * math.log(2 * math.pi)).sum(2)
            log_prior = (-0.5 * z**2 - 0.5 * math.log(2 * math.pi)).sum(2)
            log_lik = self.reconstruction_log_prob(
                tile_rows(scalar, k), tile_rows(onehot, k), z.reshape(batch * k, self.latent), tile_rows(cond, k)
            ).reshape(batch, k)
            per_class.append(torch.logsumexp(log_lik + log_prior - log_q, dim=1) - math.log(k))
        return torch.stack(per_class, dim=1) + log_det.unsqueeze(1)

    def encode(self, rows: Tensor, label: Tensor, noise: list[Tensor]) -> Tensor:
        """The posterior mean of q(z | x, c)."""
        scalar, _, onehot = self.codec.to_model(rows)
        mean, _ = self.posterior_params(scalar, onehot, class_onehot(label, self.n_classes))
        return mean
