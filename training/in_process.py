"""A model trained in-process on a DataFrame and sampled in eager torch: the fit of `synthserve.sklearn`'s
resampler, which trains anew on every `fit_resample` (so a cross-validation fold's model never sees its test rows).

The rows go through the same steps as `synthserve train` (type inference, split, feature transform, the family's
training defaults and early stopping), minus export, evaluation and publishing: nothing is written but a
temporary copy of the table. Sampling draws the contract's noise (`noise_feeds`: row i depends only on the seed
and i) through the `sample` graph's eager module and finishes rows as the server does (`decode_rows`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from synthserve.contract import Schema, noise_feeds
from training.data import decode_rows
from training.graphs import graph_specs, run_graph
from training.models import GenerativeModel
from training.pipeline import TrainRequest, train

__all__ = ["LABEL_COLUMN", "TableSampler", "train_table"]

LABEL_COLUMN = "__synthserve_label__"  # the label's column in the table handed to training


@dataclass(frozen=True)
class TableSampler:
    """A trained conditional model and its schema: rows of any class, as DataFrames in the training table's types."""

    model: GenerativeModel
    schema: Schema

    @property
    def classes(self) -> tuple[Any, ...]:
        assert self.schema.label is not None, "trained with a label column"
        return self.schema.label.classes

    def sample(self, label_codes: np.ndarray, seed: int) -> pd.DataFrame:
        """One row per class index in `label_codes`, row i from (seed, i)."""
        spec = graph_specs(self.model, self.schema)["sample"]
        feeds = noise_feeds(spec, seed, 0, len(label_codes))
        codes = np.ascontiguousarray(label_codes, dtype=np.int64)
        inputs = tuple(torch.from_numpy(feeds[t.name] if t.role == "noise" else codes) for t in spec.inputs)
        self.model.eval()
        with torch.no_grad():
            (rows,) = run_graph(self.model, "sample", inputs)
        return decode_rows(rows.numpy(), self.schema)


def train_table(
    features: pd.DataFrame,
    labels: pd.Series,
    family: str,
    *,
    seed: int,
    epochs: int | None = None,
    options: Mapping[str, Any] | None = None,
) -> TableSampler:
    """Trains `family` on `features` with class column `labels` (kept dtypes: the table goes through Parquet)."""
    table = features.reset_index(drop=True).copy()
    table.attrs.clear()  # a caller's annotations are not the table's (and Parquet would try to store them)
    table.columns = [str(c) for c in table.columns]
    table[LABEL_COLUMN] = labels.to_numpy()
    with tempfile.TemporaryDirectory(prefix="synthserve-fit-") as work:
        path = Path(work) / "rows.parquet"
        table.to_parquet(path, index=False)
        request = TrainRequest(
            data=str(path),
            family=family,
            name="in-process",
            model_store=Path(work) / "store",
            label=LABEL_COLUMN,
            seed=seed,
            epochs=epochs,
            progress=False,
            plots=False,
            family_config=dict(options or {}),
        )
        trained = train(request)
    return TableSampler(trained.model, trained.prepared.schema)
