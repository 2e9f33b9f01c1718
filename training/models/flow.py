"""Conditional normalizing flow: coupling layers with fixed permutations over the normalized columns, affine (the
default) or rational-quadratic splines (`coupling="spline"`, training.models.spline).

Discrete columns (integers, ordinal category codes) are dequantized by the feature transform, so the flow
models a continuous space and gives an exact log-density there; sampling is one inverse pass.
The base is N(mu_c, I) with a learned mean per class, which sharpens class-conditional samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from synthserve.contract import Schema
from training.models.base import mlp
from training.models.bijective import BijectiveModel
from training.models.spline import SplineCoupling
from training.transform import TransformParams

__all__ = ["COUPLINGS", "AffineCoupling", "FlowConfig", "FlowModel"]

COUPLINGS = ("affine", "spline")


@dataclass(frozen=True)
class FlowConfig:
    n_layers: int = 8
    hidden: int = 64
    max_log_scale: float = 2.0  # tanh bound on the coupling log-scales keeps inverses well conditioned
    permutation_seed: int = 0
    coupling: str = "affine"  # affine | spline
    spline_bins: int = 8  # spline couplings: bins on [-spline_bound, spline_bound], identity outside
    spline_bound: float = 4.0  # in normal scores, which the feature transform maps every column to

    def __post_init__(self) -> None:
        if self.coupling not in COUPLINGS:
            raise ValueError(f"coupling must be one of {COUPLINGS}, got {self.coupling!r}")
        if self.spline_bins < 2 or self.spline_bound <= 0:
            raise ValueError(
                f"spline_bins must be >= 2 and spline_bound > 0, got {self.spline_bins}, {self.spline_bound}"
            )


class AffineCoupling(nn.Module):
    """y = x after permutation; y_b = x_b * exp(s(x_a, c)) + t(x_a, c). Exact inverse and log|det J|."""

    permute: Tensor

    def __init__(self, dim: int, n_cond: int, hidden: int, max_log_scale: float, permutation: Tensor) -> None:
        super().__init__()
        self.split = dim // 2
        self.max_log_scale = max_log_scale
        self.net = mlp(self.split + n_cond, hidden, 2 * (dim - self.split))
        last = self.net[-1]
        assert isinstance(last, nn.Linear)
        nn.init.zeros_(last.weight)  # starts as the identity
        nn.init.zeros_(last.bias)
        # (x @ permute)[:, i] == x[:, permutation[i]], exactly: a 0/1 matrix product on these few columns costs
        # a fraction of a Gather along the column axis in ONNX Runtime. Stored as bool: model.pt keeps it so; the
        # ONNX exporter folds the cast into a float32 initializer.
        self.register_buffer("permute", torch.eye(dim, dtype=torch.bool)[:, permutation])

    def _shift_scale(self, x_a: Tensor, cond: Tensor) -> tuple[Tensor, Tensor]:
        shift, raw = self.net(torch.cat([x_a, cond], dim=1)).chunk(2, dim=1)
        return shift, self.max_log_scale * torch.tanh(raw / self.max_log_scale)

    def forward(self, x: Tensor, cond: Tensor) -> tuple[Tensor, Tensor]:
        """x [B, D] -> (y [B, D], log|det J| [B])."""
        x = x @ self.permute.to(x.dtype)
        x_a, x_b = x[:, : self.split], x[:, self.split :]
        shift, log_scale = self._shift_scale(x_a, cond)
        return torch.cat([x_a, x_b * torch.exp(log_scale) + shift], dim=1), log_scale.sum(1)

    def inverse(self, y: Tensor, cond: Tensor) -> Tensor:
        y_a, y_b = y[:, : self.split], y[:, self.split :]
        shift, log_scale = self._shift_scale(y_a, cond)
        x = torch.cat([y_a, (y_b - shift) * torch.exp(-log_scale)], dim=1)
        return x @ self.permute.T.to(x.dtype)


class FlowModel(BijectiveModel):
    family = "flow"
    config_class = FlowConfig

    def __init__(self, config: FlowConfig, schema: Schema, transform: TransformParams) -> None:
        super().__init__(config, schema, transform)
        if transform.onehot_sizes:
            raise ValueError("the flow needs the ordinal categorical encoding (no one-hot blocks)")
        self.dim = transform.n_scalar
        if self.dim < 2:
            raise ValueError(f"a flow needs at least 2 feature columns, got {self.dim}")
        generator = torch.Generator().manual_seed(config.permutation_seed)

        def coupling(permutation: Tensor) -> AffineCoupling | SplineCoupling:
            if config.coupling == "spline":
                return SplineCoupling(
                    self.dim, self.n_classes, config.hidden, config.spline_bins, config.spline_bound, permutation
                )
            return AffineCoupling(self.dim, self.n_classes, config.hidden, config.max_log_scale, permutation)

        self.layers: list[AffineCoupling | SplineCoupling] = nn.ModuleList(  # type: ignore[assignment]
            coupling(torch.randperm(self.dim, generator=generator)) for _ in range(config.n_layers)
        )
        self.class_means = nn.Parameter(torch.zeros(self.n_classes, self.dim))

    def base_mean(self, cond: Tensor) -> Tensor:
        return cond @ self.class_means
