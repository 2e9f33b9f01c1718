"""How `SynthClient`'s arguments become request fields: the sampling options the caller set (and back, from a
response, to frame attrs), the class condition, and a frame cut into tables of about one request's size.

Fields the caller leaves out stay unset, so the server applies its own defaults (e.g. Balance's `best_of`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd

from serving.model_description import ModelDescription
from serving.proto import synthesizer_pb2 as pb
from synthserve.contract import shorthand_conditions

__all__ = ["sampling_attrs", "sampling_options", "set_condition", "set_feature_conditions", "table_pieces"]

_SIZE_SAMPLE_ROWS = 64  # rows encoded to estimate a frame's bytes per row


def sampling_options(
    temperature: float | None, best_of: int | None, guidance: float | None = None
) -> pb.SamplingOptions:
    """Only the options the caller set: the server applies its defaults to the rest."""
    options = pb.SamplingOptions()
    if temperature is not None:
        options.temperature = temperature
    if best_of is not None:
        options.best_of = best_of
    if guidance is not None:
        options.guidance = guidance
    return options


def sampling_attrs(sampling: pb.SamplingOptions) -> dict[str, Any]:
    """The options a response was sampled with, as frame attrs: with the seed, they reproduce its rows."""
    return {"temperature": sampling.temperature, "best_of": sampling.best_of, "guidance": sampling.guidance}


def set_condition(request: Any, label: Any, proportions: Mapping[Any, float] | None) -> None:
    """One class label, or class proportions, for every row of a Sample or SampleStream request."""
    if label is not None and proportions is not None:
        raise ValueError("give label or proportions, not both")
    if label is not None:
        request.label = str(label)
    elif proportions is not None:
        request.proportions.weights.update({str(k): float(v) for k, v in proportions.items()})


def set_feature_conditions(request: Any, conditions: Mapping[str, Any] | None) -> None:
    """{column: value} (equality: a category label or a whole number) or {column: (low, high)} (a closed range)
    as the request's FeatureConditions (synthserve.contract.shorthand_conditions); every condition must hold."""
    for test in shorthand_conditions(conditions or {}):
        condition = request.conditions.add(column=str(test["column"]))
        if "equals" not in test:
            condition.range.low, condition.range.high = float(test["low"]), float(test["high"])
        elif isinstance(test["equals"], bool):
            condition.equals.bool_value = test["equals"]
        elif isinstance(test["equals"], int | float | np.integer | np.floating):
            condition.equals.number_value = float(test["equals"])
        else:
            condition.equals.string_value = str(test["equals"])


def table_pieces(
    description: ModelDescription, df: pd.DataFrame, request_bytes: int, *, with_labels: bool
) -> Iterator[tuple[int, pb.Table]]:
    """(start_row, Table) pieces of `df` of about `request_bytes` each (one piece for a small frame). The size
    is estimated from the first rows (every value takes a fixed number of bytes), so a large frame is encoded
    once, in its pieces."""
    sample = description.to_table(df.iloc[:_SIZE_SAMPLE_ROWS], with_labels=with_labels)
    row_bytes = sample.ByteSize() / max(1, min(len(df), _SIZE_SAMPLE_ROWS))
    pieces = max(1, math.ceil(row_bytes * len(df) / request_bytes))
    if pieces == 1:
        yield 0, sample if len(df) <= _SIZE_SAMPLE_ROWS else description.to_table(df, with_labels=with_labels)
        return
    step = math.ceil(len(df) / pieces)
    for start in range(0, len(df), step):
        yield start, description.to_table(df.iloc[start : start + step], with_labels=with_labels)
