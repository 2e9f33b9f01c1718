"""Class-conditional flow matching (rectified flow) in the model's normalized feature space.

A velocity network v(x_t, t, c) is trained with the conditional flow-matching loss of Lipman et al. (2023) on the
straight path x_t = (1 - t) x_0 + t x_1 of Liu et al. (2023): x_0 ~ N(0, I), x_1 a training row in model space,
target x_1 - x_0 (`training.losses.flow_matching_loss`). Sampling integrates dx/dt = v from t = 0 to 1 with a fixed
number of Euler or Heun steps, unrolled inside the one exported `sample` graph: the initial noise x_0 [B, W] is
the graph's only random input, so a row depends on (noise, label) alone, never on batching.

Model space is the feature transform's: continuous and dequantized integer columns as normal scores (integers
come back as floor(.) clipped to range, like every family's), missingness indicators likewise, and each
categorical column as its one-hot block, recentred to {-1, +1} so it has the scale of the normal scores. The
blocks are diffused as continuous vectors and decoded by argmax: the Gaussian relaxation of one-hot categories
that score-based tabular models use (STaSy, Kim et al. 2023), rather than CDTD's learned continuous embeddings
(Mueller et al. 2023), which need a learned embedding and decoder per column, or TabDDPM's multinomial diffusion,
whose discrete state an ODE solver cannot integrate. No order between codes is assumed: each code is its own axis.

The class enters as a learned embedding with one extra "null" class; in training the label is replaced by the
null class with probability `label_dropout`, so sampling can apply classifier-free guidance (Ho & Salimans 2022):
v = v_null + w (v_c - v_null). The `sample` graph is the plain conditional velocity (w = 1: one network
evaluation per solver stage); a conditional model also exports `sample_guided`, the same solver with w an input
per row (two evaluations per stage), which the server runs for a request's `sampling.guidance`.

No density: the exact likelihood of a flow-matching model needs the divergence integrated along the ODE (Hutchinson
estimates over many steps), and a bound would be no honest anomaly score; like the GAN, it exports `sample` only.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from synthserve.contract import Schema
from training.losses import flow_matching_loss
from training.models.base import GenerativeModel, NoiseInput, class_onehot, split_blocks
from training.objectives import LikelihoodObjective, WeightAverage
from training.transform import TransformParams

if TYPE_CHECKING:
    from training.train import TrainConfig

__all__ = ["SOLVERS", "AveragedObjective", "DiffusionConfig", "DiffusionModel", "VelocityNetwork"]

SOLVERS = ("euler", "heun")
MAX_TIME_FREQUENCY = 1000.0  # the sinusoidal time embedding's highest frequency (radians per unit of t)


@dataclass(frozen=True)
class DiffusionConfig:
    hidden: int = 256
    depth: int = 3  # hidden layers of the velocity network
    time_embedding: int = 32  # sinusoidal features of t
    label_dropout: float = 0.1  # training labels replaced by the null class (classifier-free guidance)
    solver: str = "heun"  # euler | heun
    solver_steps: int = 8  # Heun evaluates the network twice per step
    weight_average_decay: float = 0.999  # the exponential moving average of the weights that is kept

    def __post_init__(self) -> None:
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {self.solver!r}")
        if self.solver_steps < 1:
            raise ValueError(f"solver_steps must be >= 1, got {self.solver_steps}")


def time_features(t: Tensor, width: int) -> Tensor:
    """t [B, 1] in [0, 1] -> sinusoidal features [B, width] at geometrically spaced frequencies."""
    half = width // 2
    frequencies = torch.exp(torch.linspace(0.0, math.log(MAX_TIME_FREQUENCY), half, device=t.device))
    angles = t * frequencies  # [B, half]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


class VelocityNetwork(nn.Module):
    """v(x_t, t, c): h = SiLU(W x_t + e(t) + e(c)), then `depth - 1` SiLU layers, then a linear head [B, W].

    The time and class embeddings are added to the first layer (TabDDPM's MLP): per solver stage only the
    rows' own product is new, the time embedding of a fixed step is a constant of the exported graph.
    """

    def __init__(self, width: int, n_classes: int, config: DiffusionConfig) -> None:
        super().__init__()
        hidden = config.hidden
        self.time_width = config.time_embedding
        self.input = nn.Linear(width, hidden)
        self.time = nn.Sequential(nn.Linear(config.time_embedding, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.n_conditions = n_classes + 1  # the last one is the null class
        self.classes = nn.Linear(self.n_conditions, hidden, bias=False)
        layers: list[nn.Module] = [nn.SiLU()]
        for _ in range(config.depth - 1):
            layers += [nn.Linear(hidden, hidden), nn.SiLU()]
        layers.append(nn.Linear(hidden, width))
        self.body = nn.Sequential(*layers)

    def class_embedding(self, condition: Tensor) -> Tensor:
        """condition [B] int64 in [0, C] (C = null) -> [B, H]."""
        return self.classes(class_onehot(condition, self.n_conditions))

    def time_embedding(self, t: Tensor) -> Tensor:
        """t [B, 1] -> [B, H]."""
        return self.time(time_features(t, self.time_width))

    def forward(self, x: Tensor, time_embedding: Tensor, class_embedding: Tensor) -> Tensor:
        """x [B, W], embeddings [B or 1, H] -> velocity [B, W]."""
        return self.body(self.input(x) + time_embedding + class_embedding)


class AveragedObjective(LikelihoodObjective):
    """One Adam on the flow-matching loss; an exponential moving average of the weights is what gets validated and
    kept (hence exported). The sampler integrates the network along the whole path, so the noise of the last
    iterate moves every row; averaged weights (as diffusion models are trained since Ho et al. 2020) do not."""

    def __init__(self, model: DiffusionModel, config: TrainConfig) -> None:
        super().__init__(model, config)
        self.decay = model.config.weight_average_decay
        self.average = WeightAverage(list(model.parameters()))
        self.step_count = 0

    def step(self, rows: Tensor, label: Tensor, world: int) -> dict[str, float]:
        losses = super().step(rows, label, world)
        self.step_count += 1
        # The usual warm-up: early averages do not hold on to the initial weights for thousands of steps.
        self.average.update(min(self.decay, (1.0 + self.step_count) / (10.0 + self.step_count)))
        return losses

    def validated_weights(self) -> contextlib.AbstractContextManager[None]:
        """Within the block the model holds the averaged weights."""
        return self.average.held()


class DiffusionModel(GenerativeModel):
    family = "diffusion"
    config_class = DiffusionConfig
    categorical_encoding = "onehot"  # one axis per code, diffused as a continuous vector, decoded by argmax
    density_note = (
        "no density (flow matching: an exact likelihood needs the divergence integrated along the sampling ODE, "
        "and a bound would be no honest anomaly score)"
    )

    def __init__(self, config: DiffusionConfig, schema: Schema, transform: TransformParams) -> None:
        super().__init__(config, schema, transform)
        self.width = transform.model_width
        self.null_class = self.n_classes
        self.velocity = VelocityNetwork(self.width, self.n_classes, config)

    def capabilities(self) -> tuple[str, ...]:
        # Guidance mixes in the unconditional velocity: nothing to mix for a model without classes.
        return ("sample", "sample_guided") if self.conditional else ("sample",)

    def noise_inputs(self, graph: str) -> tuple[NoiseInput, ...]:
        return (NoiseInput("x0", (self.width,), "normal"),) if graph in ("sample", "sample_guided") else ()

    def latent_width(self) -> int:
        return self.width

    # --- training -----------------------------------------------------------------------------------
    @classmethod
    def training_defaults(cls, n_train_rows: int) -> dict[str, Any]:
        # Flow matching needs thousands of small steps (measured: 2-D clusters and digits sharpen with the step
        # count, not the epoch count): batches of 64 rows up to about 50 steps per epoch, at most 1,024 rows.
        return {"batch_size": max(64, min(1024, n_train_rows // 50)), "epochs": 600, "patience": 60}

    def objective(self, config: TrainConfig) -> AveragedObjective:
        return AveragedObjective(self, config)

    def training_loss(self, rows: Tensor, label: Tensor) -> Tensor:
        return flow_matching_loss(self, rows, label, self.config.label_dropout)

    def validation_loss(self, rows: Tensor, label: Tensor) -> Tensor:
        """The conditional flow-matching loss on held-out rows (t and noise fixed by the objective's seed)."""
        return flow_matching_loss(self, rows, label, 0.0)

    def to_model_space(self, rows: Tensor) -> Tensor:
        """rows [B, D] -> x_1 [B, W]: scalars (dequantized, gaps filled: training) and {-1, +1} one-hot blocks."""
        scalar, _, onehot = self.model_space(rows, dequant=True)
        return torch.cat([scalar, 2.0 * onehot - 1.0], dim=1)

    def condition(self, label: Tensor, dropout: float) -> Tensor:
        """label [B] -> the network's condition [B]: the null class with probability `dropout`, and always for
        unconditional tables."""
        if not self.conditional:
            return torch.full_like(label, self.null_class)
        if dropout <= 0.0:
            return label
        dropped = torch.rand(label.shape, device=label.device) < dropout
        return torch.where(dropped, torch.full_like(label, self.null_class), label)

    # --- graph methods ------------------------------------------------------------------------------
    def sample(self, noise: list[Tensor], label: Tensor) -> Tensor:
        return self.decode(self.integrate(noise[0], label, None))

    def sample_guided(self, noise: list[Tensor], label: Tensor, guidance: Tensor) -> Tensor:
        return self.decode(self.integrate(noise[0], label, guidance[:, None]))

    def integrate(self, x: Tensor, label: Tensor, guidance: Tensor | None) -> Tensor:
        """x_0 [B, W] -> x_1 [B, W] by the fixed solver; `guidance` [B, 1] is w per row, None the plain
        conditional velocity (one network evaluation per stage instead of two)."""
        class_embedding = self.velocity.class_embedding(self.condition(label, 0.0))  # [B, H]
        null = torch.full((1,), self.null_class, dtype=torch.long, device=x.device)
        null_embedding = self.velocity.class_embedding(null)  # [1, H]

        def velocity(x: Tensor, t: float) -> Tensor:
            time_embedding = self.velocity.time_embedding(torch.full((1, 1), t, device=x.device))
            conditional = self.velocity(x, time_embedding, class_embedding)
            if guidance is None:
                return conditional
            unconditional = self.velocity(x, time_embedding, null_embedding)
            return unconditional + guidance * (conditional - unconditional)

        steps = self.config.solver_steps
        h = 1.0 / steps
        for k in range(steps):
            t = k * h
            slope = velocity(x, t)
            if self.config.solver == "heun":
                slope = 0.5 * (slope + velocity(x + h * slope, t + h))
            x = x + h * slope
        return x

    def decode(self, x: Tensor) -> Tensor:
        """x_1 [B, W] -> rows [B, D]: scalars through the inverse transform, each block's argmax as the code."""
        codes = None
        if self.onehot_sizes:
            blocks = split_blocks(x[:, self.n_scalar :], self.onehot_sizes)
            codes = torch.stack([block.argmax(dim=1) for block in blocks], dim=1).float()
        return self.codec.from_model(x[:, : self.n_scalar], codes)
