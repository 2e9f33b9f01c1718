"""What the two exact-density families share: a class-conditional bijection between the normalized columns and a
Gaussian base, so log p(x) is one pass and sampling is the inverse (zuko's "a flow family is a constructor").

The coupling flow (`flow.py`) and the masked autoregressive flow (`autoregressive.py`) differ only in their
layers, each a bijection with `forward(z, cond) -> (u, log|du/dz|)` and `inverse(u, cond) -> z`, and in their
base: N(mu_c, I) with a learned mean per class, or N(0, I) when the layers carry the class themselves. Discrete
columns are dequantized by the feature transform (ordinal codes), so the density is exact on that space.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
from torch import Tensor

from training.losses import flow_nll
from training.models.base import GenerativeModel, NoiseInput, class_onehot, tile_rows

__all__ = ["Bijection", "BijectiveModel"]

DENSITY_NOTE = (
    "exact log-density of the dequantized rows in original units; integer columns and categorical codes "
    "(ordinally dequantized) are scored at the cell midpoint x + 0.5, a one-point estimate of log P(x)"
)


class Bijection(Protocol):
    def __call__(self, z: Tensor, cond: Tensor) -> tuple[Tensor, Tensor]: ...  # (u [B, D], log|det J| [B])

    def inverse(self, u: Tensor, cond: Tensor) -> Tensor: ...


class BijectiveModel(GenerativeModel):
    """Subclasses set `dim`, `layers` (applied in order towards the base) and, for a class-dependent base,
    override `base_mean`."""

    # A bijection needs a continuous space: categories are dequantized as ordinal codes, like integers.
    categorical_encoding = "ordinal"
    density_note = DENSITY_NOTE
    dim: int
    layers: list[Bijection]

    def base_mean(self, cond: Tensor) -> Tensor | None:
        """The base's mean for class one-hots cond [B, C] ([B, D]); None: the standard normal."""
        return None

    def capabilities(self) -> tuple[str, ...]:
        return ("sample", "log_prob", "encode")

    def noise_inputs(self, graph: str) -> tuple[NoiseInput, ...]:
        return (NoiseInput("z", (self.dim,), "normal"),) if graph == "sample" else ()

    def latent_width(self) -> int:
        return self.dim

    def training_loss(self, rows: Tensor, label: Tensor) -> Tensor:
        return flow_nll(self, rows, label)

    def to_base(self, z: Tensor, cond: Tensor) -> tuple[Tensor, Tensor]:
        """Normalized columns [B, D] -> base coordinates [B, D] (before the class mean) and log|det J| [B]."""
        log_det = torch.zeros(z.shape[0], device=z.device)
        for layer in self.layers:
            z, step = layer(z, cond)
            log_det = log_det + step
        return z, log_det

    def _centred(self, u: Tensor, cond: Tensor) -> Tensor:
        mean = self.base_mean(cond)
        return u if mean is None else u - mean

    def model_log_prob(self, z: Tensor, label: Tensor) -> Tensor:
        """log-density of normalized columns given the class [B]: the base's plus log|det J|."""
        cond = class_onehot(label, self.n_classes)
        u, log_det = self.to_base(z, cond)
        centred = self._centred(u, cond)
        return -0.5 * (centred**2).sum(1) - 0.5 * self.dim * math.log(2 * math.pi) + log_det

    def sample(self, noise: list[Tensor], label: Tensor) -> Tensor:
        cond = class_onehot(label, self.n_classes)
        mean = self.base_mean(cond)
        z = noise[0] if mean is None else noise[0] + mean  # [B, D]
        for layer in reversed(self.layers):
            z = layer.inverse(z, cond)
        return self.codec.from_model(z, None)

    def log_prob_cond(self, rows: Tensor, noise: list[Tensor]) -> Tensor:
        z, log_det, _ = self.codec.to_model(rows)
        batch, n_classes = z.shape[0], self.n_classes
        # Every row under every class at once: [B*C, D] with class index = position mod C.
        labels = torch.arange(n_classes, device=z.device).repeat(batch)
        cond = self.model_log_prob(tile_rows(z, n_classes), labels).reshape(batch, n_classes)
        return cond + log_det.unsqueeze(1)

    def encode(self, rows: Tensor, label: Tensor, noise: list[Tensor]) -> Tensor:
        """The base noise that regenerates the row (one pass): sample(encode(x, c), c) == x up to dequantization."""
        z, _, _ = self.codec.to_model(rows)
        cond = class_onehot(label, self.n_classes)
        u, _ = self.to_base(z, cond)
        return self._centred(u, cond)
