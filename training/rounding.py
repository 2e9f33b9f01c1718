"""How far float32 rounding moves each output of the eager model: the unit in which exports are judged.

How far rounding moves an output depends on the model: a flow whose coupling layers strongly expand some direction
turns one rounding (6e-8) into 1e-4 of its latent or log-density, in eager as much as in any graph. So each output
element's rounding is measured on the eager model itself: its float32 error against the same model run in float64
(same float32 weights, knots and inputs), combined with the spread of NUDGED_COPIES copies whose weights and inputs
are one ulp off (one evaluation can be lucky on a row that amplifies every rounding). `training.parity` compares
exported graphs with eager in these units.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from synthserve.contract import GraphSpec
from training.models import GenerativeModel

__all__ = ["NUDGED_COPIES", "ROUNDING_FLOOR", "EagerOutput", "as_columns", "measure_eager", "nudged_models"]

# Copies of the model with every weight one float32 ulp off, run on inputs one ulp off: their spread is how much
# each output element amplifies a rounding.
NUDGED_COPIES = 4
# An element eager happens to compute exactly (a saturated posterior, clipped rows) still allows half an ulp.
ROUNDING_FLOOR = 2.0**-24


def _widen(value: Any) -> Any:
    """float32 tensors (weights, buffers, inputs, intermediates) and the float32 dtype -> float64."""
    if isinstance(value, Tensor) and value.dtype == torch.float32:
        return value.double()
    if value is torch.float32:
        return torch.float64
    if type(value) in (list, tuple):
        return type(value)(_widen(v) for v in value)
    if isinstance(value, dict):
        return {k: _widen(v) for k, v in value.items()}
    return value


class _Float64(TorchFunctionMode):
    """Runs float32 model code in float64 without touching the model: every op gets its float32 arguments
    widened (float32 values are exact in float64), and `.float()` / dtype=torch.float32 mean float64."""

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        if func is Tensor.float:
            return args[0].double()
        return func(*_widen(args), **_widen(kwargs or {}))


def _float64_outputs(module: nn.Module, inputs: tuple[Tensor, ...]) -> list[np.ndarray]:
    """The graph's outputs in (nearly) exact arithmetic on the float32 model and inputs."""
    with torch.no_grad(), _Float64():
        return [t.double().numpy() for t in module(*inputs)]


def _nudge(values: Tensor, generator: torch.Generator) -> Tensor:
    """Every element one float32 ulp up or down, at random."""
    direction = torch.randint(0, 2, values.shape, generator=generator).to(values.dtype) * 2 - 1
    return torch.nextafter(values, direction * math.inf)


def _weights(model: GenerativeModel) -> list[Tensor]:
    """What a nudge moves: the trained parameters and the reference rows the log_prob graph measures distances to
    (weights of that graph as much as trained ones: how far a distance moves with one ulp of them is its rounding)."""
    return [*model.parameters(), *(model.neighbors.product_weights() if model.neighbors is not None else [])]


def nudged_models(model: GenerativeModel, generator: torch.Generator) -> list[GenerativeModel]:
    """NUDGED_COPIES copies of `model`, each weight one ulp off (the feature transform's knots stay exact)."""
    copies = []
    for _ in range(NUDGED_COPIES):
        nudged = copy.deepcopy(model)
        with torch.no_grad():
            for weight in _weights(nudged):
                weight.copy_(_nudge(weight, generator))
        copies.append(nudged)
    return copies


def _nudged_inputs(
    spec: GraphSpec, inputs: tuple[Tensor, ...], continuous: Tensor, generator: torch.Generator
) -> tuple[Tensor, ...]:
    """Continuous row columns and normal noise one ulp off; integers and category codes (compared exactly),
    labels and uniform noise (clamped inside (0, 1)) as they are."""
    nudged = []
    for t, x in zip(spec.inputs, inputs):
        if t.role == "rows":
            x = torch.where(continuous, _nudge(x, generator), x)
        elif t.role == "noise" and t.distribution == "normal":
            x = _nudge(x, generator)
        nudged.append(x)
    return tuple(nudged)


def as_columns(values: np.ndarray) -> np.ndarray:
    """An output [B, ...] as float64 columns [B, F]."""
    return values.reshape(len(values), -1).astype(np.float64)


def _finite_squares(difference: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(difference), difference, 0.0) ** 2


@dataclass(frozen=True)
class EagerOutput:
    """One output of the eager model on one parity batch, with what float32 rounding does to it.

    values: float32 eager [B, F]; scale: per column [F], its median |value|, never below 1% of the whole output's
    nor, for log-densities and probabilities, below 1 (nats / probability); rounding: per element [B, F], how far
    float32 rounding moves it: eager's own error against float64 combined with the spread of the nudged copies (a
    single evaluation can be lucky on a row that amplifies every rounding), plus ROUNDING_FLOOR of its magnitude.
    """

    values: np.ndarray
    scale: np.ndarray
    rounding: np.ndarray
    own_error: np.ndarray  # per column [F]: RMS |eager - float64| / (scale + |value|), the graph's conditioning

    @classmethod
    def measure(cls, graph: str, values: np.ndarray, reference: np.ndarray, nudged: list[np.ndarray]) -> EagerOutput:
        """`reference`: the same output in float64; `nudged`: from the nudged copies on nudged inputs."""
        values, reference = as_columns(values), as_columns(reference)
        absolute = np.where(np.isfinite(reference), np.abs(reference), np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a column of gaps only: an all-NaN median
            column_median = np.nan_to_num(np.nanmedian(absolute, axis=0))
            overall_median = float(np.nan_to_num(np.nanmedian(absolute)))
        scale = np.maximum(column_median, max(1.0 if graph == "log_prob" else 1e-6, 1e-2 * overall_median))
        magnitude = scale + np.nan_to_num(absolute)
        with np.errstate(invalid="ignore"):  # inf - inf: a gap or an overflow on both sides, left out
            own = _finite_squares(reference - values)
            deviations = [as_columns(n) - values for n in nudged]
        counts = sum(np.isfinite(d) for d in deviations)
        spread = sum(_finite_squares(d) for d in deviations) / np.maximum(counts, 1)
        rounding = np.sqrt(own + spread) + ROUNDING_FLOOR * magnitude
        return cls(values, scale, rounding, np.sqrt((own / magnitude**2).mean(0)))


def measure_eager(
    graph: str,
    module: nn.Module,
    nudged: Sequence[nn.Module],
    spec: GraphSpec,
    inputs: tuple[Tensor, ...],
    continuous: Tensor,
    generator: torch.Generator,
) -> list[EagerOutput]:
    """Eager float32 outputs of one parity batch, each with how far float32 rounding moves it."""
    with torch.no_grad():
        values = [t.numpy() for t in module(*inputs)]
        spread = [[t.numpy() for t in m(*_nudged_inputs(spec, inputs, continuous, generator))] for m in nudged]
    reference = _float64_outputs(module, inputs)
    return [
        EagerOutput.measure(graph, values[i], reference[i], [outputs[i] for outputs in spread])
        for i in range(len(values))
    ]
