"""How a family's weights are optimized: its optimizers, one training step, the validation loss, the weights to keep.

A family names its objective (`GenerativeModel.objective`) and supplies the losses it needs (`training.losses`);
the loop in `training.train` only calls `step`, `validation_loss` and `snapshot`, so it never asks which family
it trains. Gradients are averaged across data-parallel processes after each backward pass (see `training.train`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch import Tensor

if TYPE_CHECKING:
    from training.models.base import GenerativeModel
    from training.models.gan import GANModel
    from training.train import TrainConfig

__all__ = [
    "FUSED_ADAM",
    "GENERATOR_AVERAGE_DECAY",
    "MAX_GRADIENT_NORM",
    "VALIDATION_SEED",
    "AdversarialObjective",
    "LikelihoodObjective",
    "Objective",
    "WeightAverage",
    "average_gradients",
]

GENERATOR_AVERAGE_DECAY = 0.995
MAX_GRADIENT_NORM = 10.0  # guards flow / VAE training against the occasional outlier batch
VALIDATION_SEED = 12345  # a fixed noise stream makes successive validation losses comparable
# One kernel per step for all weights (CPU and CUDA): the per-tensor loop cost the autoregressive family about a
# quarter of each step on one CPU thread (benchmarks in docs/fidelity.md).
FUSED_ADAM = True


def average_gradients(parameters: list[torch.nn.Parameter], world: int) -> None:
    """Mean of each gradient over the `world` processes (a no-op for one process)."""
    if world == 1:
        return
    for p in parameters:
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad /= world


class WeightAverage:
    """An exponential moving average of some weights, and a block in which they hold it: what the GAN's generator
    and the diffusion model validate and keep, being far less noisy than the last iterate."""

    def __init__(self, parameters: list[torch.nn.Parameter]) -> None:
        self.parameters = parameters
        self.average = [p.detach().clone() for p in parameters]

    def update(self, decay: float) -> None:
        """average <- decay * average + (1 - decay) * current."""
        with torch.no_grad():
            for average, p in zip(self.average, self.parameters):
                average.lerp_(p, 1.0 - decay)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Within the block the weights are the average; the current ones come back after it."""
        current = [p.detach().clone() for p in self.parameters]
        with torch.no_grad():
            for p, average in zip(self.parameters, self.average):
                p.copy_(average)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, saved in zip(self.parameters, current):
                    p.copy_(saved)


class Objective:
    """The optimizers of one model, its training step and validation loss."""

    def __init__(self, model: GenerativeModel) -> None:
        self.model = model

    def step(self, rows: Tensor, label: Tensor, world: int) -> dict[str, float]:
        """One update on a batch; returns the batch's losses by name ("loss", or the GAN's "critic"/"generator")."""
        raise NotImplementedError

    def validation_loss(self, rows: Tensor, label: Tensor) -> float:
        """The family's validation loss (`GenerativeModel.validation_loss`) on one fixed noise stream."""
        with torch.random.fork_rng(devices=[rows.device] if rows.is_cuda else []), torch.no_grad():
            torch.manual_seed(VALIDATION_SEED)
            with self.validated_weights():
                return float(self.model.validation_loss(rows, label).item())

    def validated_weights(self) -> contextlib.AbstractContextManager[None]:
        """Within the block the model holds the weights that are validated and kept: its current ones here."""
        return contextlib.nullcontext()

    def snapshot(self) -> dict[str, Tensor]:
        """The weights to keep if this epoch is the best: a copy of each tensor of the state (an eighth of what
        `copy.deepcopy` of the state costs, which the autoregressive family paid on most epochs of small tables)."""
        with self.validated_weights():
            return {name: tensor.clone() for name, tensor in self.model.state_dict().items()}


class LikelihoodObjective(Objective):
    """One Adam over all weights on the family's `training_loss` (a negative log-likelihood or a bound of it),
    gradients clipped to MAX_GRADIENT_NORM."""

    def __init__(self, model: GenerativeModel, config: TrainConfig) -> None:
        super().__init__(model)
        # Listed once: `model.parameters()` walks every submodule, twice a step (a twentieth of a small table's step).
        self.parameters = list(model.parameters())
        self.optimizer = torch.optim.Adam(
            self.parameters, lr=config.learning_rate, weight_decay=config.weight_decay, fused=FUSED_ADAM
        )

    def step(self, rows: Tensor, label: Tensor, world: int) -> dict[str, float]:
        model = self.model
        self.optimizer.zero_grad()
        loss = model.training_loss(rows, label)
        loss.backward()
        average_gradients(self.parameters, world)
        torch.nn.utils.clip_grad_norm_(self.parameters, MAX_GRADIENT_NORM)
        self.optimizer.step()
        return {"loss": float(loss.item())}


class AdversarialObjective(Objective):
    """WGAN-GP: one Adam (betas 0.5, 0.9) per player, a generator update every `critic_steps` critic updates.

    An exponential moving average of the generator's weights is what gets validated and kept (hence exported):
    it is far less noisy than the last iterate of the adversarial game.
    """

    model: GANModel

    def __init__(self, model: GANModel, config: TrainConfig) -> None:
        super().__init__(model)
        self.step_count = 0
        self.generator_params = model.generator_parameters()
        self.critic_params = model.critic_parameters()
        lr = config.learning_rate
        self.generator_optimizer = torch.optim.Adam(self.generator_params, lr=lr, betas=(0.5, 0.9), fused=FUSED_ADAM)
        self.critic_optimizer = torch.optim.Adam(self.critic_params, lr=lr, betas=(0.5, 0.9), fused=FUSED_ADAM)
        self.generator_average = WeightAverage(self.generator_params)

    def step(self, rows: Tensor, label: Tensor, world: int) -> dict[str, float]:
        model = self.model
        self.critic_optimizer.zero_grad()
        critic = model.critic_loss(rows, label)
        critic.backward()
        average_gradients(self.critic_params, world)
        self.critic_optimizer.step()
        self.step_count += 1
        out = {"critic": float(critic.item())}
        if self.step_count % model.critic_steps == 0:
            self.generator_optimizer.zero_grad()
            generator = model.generator_loss(label)
            generator.backward()
            average_gradients(self.generator_params, world)
            self.generator_optimizer.step()
            self.generator_average.update(GENERATOR_AVERAGE_DECAY)
            out["generator"] = float(generator.item())
        return out

    def validated_weights(self) -> contextlib.AbstractContextManager[None]:
        """Within the block the generator holds the averaged weights."""
        return self.generator_average.held()
