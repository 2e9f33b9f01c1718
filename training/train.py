"""The training loop: Adam, validation-based early stopping, reproducible from the seed, data-parallel under torchrun.

Data parallelism averages gradients across processes after each backward pass (gloo on CPU, NCCL on GPU).
Every process sees the same global batch order (same seed) and takes its own share of each batch, so one
process or many train on the same data per step; validation losses are averaged across processes so all
of them stop at the same epoch.
"""

from __future__ import annotations

import contextlib
import copy
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import Tensor
from tqdm import tqdm

from training.losses import flow_nll, gan_critic_loss, gan_generator_loss, moment_distance, vae_negative_elbo
from training.models import FlowModel, GANModel, GenerativeModel, VAEModel

__all__ = ["GENERATOR_AVERAGE_DECAY", "TrainConfig", "TrainResult", "train_model"]

GENERATOR_AVERAGE_DECAY = 0.995
MAX_GRADIENT_NORM = 10.0  # guards flow / VAE training against the occasional outlier batch


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 300  # upper bound; early stopping usually ends sooner
    batch_size: int = 256
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 25  # epochs without a better validation loss before stopping
    seed: int = 0
    device: str = "cpu"
    progress: bool = True


@dataclass
class TrainResult:
    history: dict[str, list[float]] = field(default_factory=dict)  # per-epoch losses
    best_epoch: int = 0
    epochs_run: int = 0
    seconds: float = 0.0  # wall clock
    cpu_seconds: float = 0.0  # this process's CPU time: the fair figure on a shared machine
    best_validation_loss: float = float("inf")


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _average_gradients(parameters: list[torch.nn.Parameter], world: int) -> None:
    if world == 1:
        return
    for p in parameters:
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad /= world


def _average_scalar(value: float, world: int, device: torch.device) -> float:
    if world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item()) / world


class _Objective:
    """Family-specific optimizers, one training step and the validation loss."""

    def __init__(self, model: GenerativeModel, config: TrainConfig) -> None:
        self.model = model
        self.step_count = 0
        if isinstance(model, GANModel):
            self.generator_params = list(model.generator.parameters())
            self.critic_params = [
                *model.critic_body.parameters(),
                *model.critic_head.parameters(),
                *model.class_embedding.parameters(),
            ]
            lr = config.learning_rate
            self.optimizers = [
                torch.optim.Adam(self.generator_params, lr=lr, betas=(0.5, 0.9)),
                torch.optim.Adam(self.critic_params, lr=lr, betas=(0.5, 0.9)),
            ]
            # An exponential moving average of the generator's weights is what gets validated and exported:
            # it is far less noisy than the last iterate of the adversarial game.
            self.generator_average = [p.detach().clone() for p in self.generator_params]
        else:
            self.optimizers = [
                torch.optim.Adam(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
            ]

    def step(self, rows: Tensor, label: Tensor, world: int) -> dict[str, float]:
        model = self.model
        if isinstance(model, GANModel):
            gen_opt, critic_opt = self.optimizers
            critic_opt.zero_grad()
            critic = gan_critic_loss(model, rows, label, model.gradient_penalty)
            critic.backward()
            _average_gradients(self.critic_params, world)
            critic_opt.step()
            self.step_count += 1
            out = {"critic": float(critic.item())}
            if self.step_count % model.critic_steps == 0:
                gen_opt.zero_grad()
                generator = gan_generator_loss(model, label)
                generator.backward()
                _average_gradients(self.generator_params, world)
                gen_opt.step()
                with torch.no_grad():
                    for average, p in zip(self.generator_average, self.generator_params):
                        average.lerp_(p, 1.0 - GENERATOR_AVERAGE_DECAY)
                out["generator"] = float(generator.item())
            return out
        (optimizer,) = self.optimizers
        optimizer.zero_grad()
        loss = self.loss(rows, label)
        loss.backward()
        _average_gradients(list(model.parameters()), world)
        torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRADIENT_NORM)
        optimizer.step()
        return {"loss": float(loss.item())}

    def loss(self, rows: Tensor, label: Tensor) -> Tensor:
        model = self.model
        if isinstance(model, FlowModel):
            return flow_nll(model, rows, label)
        if isinstance(model, VAEModel):
            return vae_negative_elbo(model, rows, label, model.beta)
        raise TypeError(f"no single-loss objective for {type(model).__name__}")

    def validation_loss(self, rows: Tensor, label: Tensor) -> float:
        # A fixed noise stream makes successive validation losses comparable.
        with torch.random.fork_rng(devices=[rows.device] if rows.is_cuda else []), torch.no_grad():
            torch.manual_seed(12345)
            if isinstance(self.model, GANModel):
                with self.averaged_generator():
                    return float(moment_distance(self.model, rows, label).item())
            return float(self.loss(rows, label).item())

    @contextlib.contextmanager
    def averaged_generator(self) -> Iterator[None]:
        """Within the block the model's generator holds the averaged weights (GAN only)."""
        if not isinstance(self.model, GANModel):
            yield
            return
        current = [p.detach().clone() for p in self.generator_params]
        with torch.no_grad():
            for p, average in zip(self.generator_params, self.generator_average):
                p.copy_(average)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, saved in zip(self.generator_params, current):
                    p.copy_(saved)

    def snapshot(self) -> dict[str, Tensor]:
        """The weights to keep if this epoch is the best: the averaged generator for GANs."""
        with self.averaged_generator():
            return copy.deepcopy(self.model.state_dict())


def train_model(
    model: GenerativeModel,
    train: tuple[Tensor, Tensor],
    validation: tuple[Tensor, Tensor],
    config: TrainConfig,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train in place; the weights of the best validation epoch are restored at the end."""
    rank, world = _world()
    device = torch.device(config.device)
    model.to(device)
    if world > 1:
        for tensor in [*model.parameters(), *model.buffers()]:
            dist.broadcast(tensor.data, src=0)
    torch.manual_seed(config.seed + 1000 * rank)  # dequantization / reparameterization noise differs per process
    rows, labels = (t.to(device) for t in train)
    val_rows, val_labels = (t.to(device) for t in validation)
    objective = _Objective(model, config)
    order_generator = torch.Generator().manual_seed(config.seed)
    result = TrainResult(history={"train_loss": [], "validation_loss": []})
    best_state = copy.deepcopy(model.state_dict())
    start = time.perf_counter()
    start_cpu = time.process_time()
    bar = tqdm(
        range(config.epochs), disable=not config.progress or rank != 0, file=sys.stderr, desc=model.family, leave=False
    )
    for epoch in bar:
        model.train()
        order = torch.randperm(len(rows), generator=order_generator)
        sums: dict[str, float] = {}
        n_batches = 0
        for begin in range(0, len(order), config.batch_size):
            batch = order[begin : begin + config.batch_size]
            if len(batch) < 2 * world:  # every process must take (or skip) the same steps
                continue
            index = batch[rank::world].to(device)
            for key, value in objective.step(rows[index], labels[index], world).items():
                sums[key] = sums.get(key, 0.0) + value
            n_batches += 1
        model.eval()
        train_losses = {k: v / max(n_batches, 1) for k, v in sums.items()}
        val_loss = _average_scalar(objective.validation_loss(val_rows, val_labels), world, device)
        main_loss = train_losses.get("loss", train_losses.get("critic", 0.0))
        result.history["train_loss"].append(main_loss)
        result.history["validation_loss"].append(val_loss)
        for key, value in train_losses.items():
            result.history.setdefault(key, []).append(value)
        bar.set_postfix({**{k: f"{v:.3f}" for k, v in train_losses.items()}, "val": f"{val_loss:.3f}"})
        if on_epoch is not None:
            on_epoch(epoch, {**train_losses, "validation_loss": val_loss})
        result.epochs_run = epoch + 1
        if val_loss < result.best_validation_loss:
            result.best_validation_loss = val_loss
            result.best_epoch = epoch
            best_state = objective.snapshot()
        elif epoch - result.best_epoch >= config.patience:
            break
    bar.close()
    model.load_state_dict(best_state)
    model.cpu()
    result.seconds = time.perf_counter() - start
    result.cpu_seconds = time.process_time() - start_cpu
    return result
