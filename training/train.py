"""The training loop: validation-based early stopping, reproducible from the seed, data-parallel under torchrun.

Which optimizers a step uses and what it minimizes is the family's objective (`GenerativeModel.objective`,
`training.objectives`); the loop is the same for every family.
Data parallelism averages gradients across processes after each backward pass (gloo on CPU, NCCL on GPU).
Every process sees the same global batch order (same seed) and takes its own share of each batch, so one
process or many train on the same data per step; validation losses are averaged across processes so all
of them stop at the same epoch.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import Tensor
from tqdm import tqdm

from training.models import GenerativeModel

__all__ = ["TrainConfig", "TrainResult", "train_model"]


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

    def __post_init__(self) -> None:
        for name, lowest in (("epochs", 1), ("batch_size", 2), ("patience", 1)):
            if getattr(self, name) < lowest:
                raise ValueError(f"{name}={getattr(self, name)}: must be at least {lowest}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate={self.learning_rate}: must be above 0")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay={self.weight_decay}: must be at least 0")


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


def _average_scalar(value: float, world: int, device: torch.device) -> float:
    if world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item()) / world


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
    objective = model.objective(config)  # the family says how it is optimized
    order_generator = torch.Generator().manual_seed(config.seed)
    result = TrainResult(history={"train_loss": [], "validation_loss": []})
    best_state = objective.snapshot()
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
