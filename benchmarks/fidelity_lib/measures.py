"""Measures on user-facing frames, the same for every generator: two-sample AUC, values outside the training
range, invented categories.

Column kinds come from the real training frame as pandas reads its CSV: numeric dtypes are numbers, text columns
that one ISO 8601 parse reads whole are datetimes, other text columns are categories. Generated frames are read
back from their CSVs the same way, so every generator is judged on what a user would load.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from training.evaluate import c2st_auc

__all__ = ["Encoding", "invented_share", "outside_share", "read_frame", "two_sample_auc"]


def _is_datetime(values: pd.Series) -> bool:
    present = values.dropna().astype(str)
    if present.empty or present.str.fullmatch(r"[+-]?\d+(\.\d*)?").any():
        return False
    try:
        pd.to_datetime(present, format="ISO8601")
    except (ValueError, TypeError):
        return False
    return True


@dataclass(frozen=True)
class Encoding:
    """The feature encoding fitted on the real training frame: numbers as they are (NaN kept), datetimes as
    seconds since the epoch, categories one-hot over the training levels plus one column for unseen levels
    (a gap is all zeros)."""

    numeric: tuple[str, ...]
    datetime: tuple[str, ...]
    levels: dict[str, tuple[str, ...]]  # categorical column -> training levels (as text)

    @classmethod
    def fit(cls, real: pd.DataFrame) -> Encoding:
        numeric, datetime, levels = [], [], {}
        for column in real.columns:
            values = real[column]
            if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
                numeric.append(column)
            elif _is_datetime(values):
                datetime.append(column)
            else:
                levels[column] = tuple(sorted(values.dropna().astype(str).unique()))
        return cls(tuple(numeric), tuple(datetime), levels)

    def numbers(self, frame: pd.DataFrame, column: str) -> np.ndarray:
        """A numeric column as float64 (NaN for gaps, for text that is no number and for a column left out)."""
        if column not in frame.columns:
            return np.full(len(frame), np.nan)
        return pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)

    def __call__(self, frame: pd.DataFrame) -> np.ndarray:
        parts = [self.numbers(frame, c)[:, None] for c in self.numeric]
        for column in self.datetime:
            if column in frame.columns:
                stamps = pd.to_datetime(frame[column], format="ISO8601", errors="coerce")
                seconds = (stamps - pd.Timestamp(0)).dt.total_seconds().to_numpy(dtype=np.float64, na_value=np.nan)
            else:
                seconds = np.full(len(frame), np.nan)
            parts.append(seconds[:, None])
        for column, levels in self.levels.items():
            block = np.zeros((len(frame), len(levels) + 1))
            if column in frame.columns:
                values = frame[column]
                text = values.astype(str).to_numpy()
                present = values.notna().to_numpy()
                index = {level: i for i, level in enumerate(levels)}
                for row in np.flatnonzero(present):
                    block[row, index.get(text[row], len(levels))] = 1.0
            parts.append(block)
        return np.concatenate(parts, axis=1) if parts else np.zeros((len(frame), 0))


def read_frame(path: Path, categorical: tuple[str, ...] = ()) -> pd.DataFrame:
    """A CSV as pandas reads it; `categorical` columns read as text (a generated column of '2' and '3' stays
    the category it was trained as)."""
    return pd.read_csv(path, dtype=dict.fromkeys(categorical, str))


def two_sample_auc(real: pd.DataFrame, synthetic: pd.DataFrame, encoding: Encoding, seed: int = 0) -> float:
    """5-fold stratified cross-validated ROC AUC of gradient boosting telling generated from real training rows
    (training.evaluate.c2st_auc, one thread); 0.5 = indistinguishable."""
    return c2st_auc(encoding(real), encoding(synthetic), seed=seed)


def outside_share(real: pd.DataFrame, synthetic: pd.DataFrame, encoding: Encoding) -> float | None:
    """Share of generated present values of numeric columns outside the column's training [min, max]."""
    outside = present = 0
    for column in encoding.numeric:
        if column not in synthetic.columns:
            continue
        train = encoding.numbers(real, column)
        values = encoding.numbers(synthetic, column)
        values = values[~np.isnan(values)]
        outside += int(((values < np.nanmin(train)) | (values > np.nanmax(train))).sum())
        present += values.size
    return outside / present if present else None


def invented_share(synthetic: pd.DataFrame, encoding: Encoding) -> float | None:
    """Share of generated present values of categorical columns that no training row holds."""
    invented = present = 0
    for column, levels in encoding.levels.items():
        if column not in synthetic.columns:
            continue
        values = synthetic[column].dropna().astype(str)
        invented += int((~values.isin(levels)).sum())
        present += len(values)
    return invented / present if present else None
