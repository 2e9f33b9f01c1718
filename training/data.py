"""Load a table (or small images) with an optional label column, infer its schema, split it reproducibly.

Sources are read by `training.sources`; column kinds come from `training.columns`.
Rows go to the graphs as float32 numbers (`synthserve.contract.frames`): continuous and integer values as they
are, categories as indices into their labels, datetimes as units since their origin, NaN where a value is missing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from synthserve.contract import Column, LabelSpec, Schema, close_matches, finish_rows
from synthserve.contract.frames import label_codes, series_from_values, values_from_series
from training.columns import KIND_CHOICES, OTHER_LABEL, grid_step, infer_column, python_value
from training.errors import DataError
from training.sources import read_source

__all__ = [
    "MAX_CLASSES",
    "MIN_CLASS_ROWS",
    "MIN_ROWS",
    "Dataset",
    "Prepared",
    "Split",
    "build_schema",
    "decode_rows",
    "encode_labels",
    "encode_rows",
    "load_dataset",
    "prepare_data",
    "split_dataset",
]

# A label is a class column: at most this many classes. A class of fewer than MIN_CLASS_ROWS rows is too small to
# split: all its rows train the model. A table needs MIN_ROWS rows for the three parts.
MAX_CLASSES = 100
MIN_CLASS_ROWS = 5
MIN_ROWS = 20
HELDOUT_FRACTION = 0.2
VALIDATION_FRACTION = 0.1


@dataclass(frozen=True)
class Dataset:
    """All rows of a source: feature frame, optional label series, inferred column kinds.

    `columns` holds kinds and category labels but no ranges; `build_schema` adds training ranges and priors.
    `heldout_index` is the predefined held-out part (a KEEL fold), or None to split at random.
    """

    source: str
    features: pd.DataFrame
    labels: pd.Series | None
    columns: tuple[Column, ...]
    classes: tuple[Any, ...] | None
    image_shape: tuple[int, ...] | None = None
    heldout_index: np.ndarray | None = None
    notes: tuple[str, ...] = ()  # what the inference left out or changed, for the user


@dataclass(frozen=True)
class Split:
    """Row positions of the training, validation (early stopping) and held-out (evaluation) parts."""

    train: np.ndarray
    validation: np.ndarray
    heldout: np.ndarray


def _impute(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    for col in frame.columns:
        if frame[col].isna().any() and frame[col].notna().any():
            if pd.api.types.is_numeric_dtype(frame[col]) and not pd.api.types.is_bool_dtype(frame[col]):
                frame[col] = frame[col].fillna(frame[col].median())
            else:
                frame[col] = frame[col].fillna(frame[col].mode(dropna=True).iloc[0])
    return frame


def _check_kinds(kinds: dict[str, str], columns: list[str]) -> None:
    for name, kind in kinds.items():
        if name not in columns:
            raise DataError(f"--column {name}={kind}: no such column{close_matches(name, columns)}")
        if kind not in KIND_CHOICES:
            raise DataError(f"--column {name}={kind}: unknown kind (expected one of {', '.join(KIND_CHOICES)})")


def _labels(frame: pd.DataFrame, label: str, notes: list[str]) -> tuple[pd.DataFrame, pd.Series]:
    """Split off the label column, check it is a class column and drop rows without a label."""
    labels = frame.pop(label)
    unlabelled = labels.isna().to_numpy()
    if unlabelled.all():
        raise DataError(f"--label {label!r}: the column has no values")
    if unlabelled.any():
        notes.append(f"{int(unlabelled.sum())} rows without a {label!r} value left out")
        frame, labels = frame[~unlabelled].reset_index(drop=True), labels[~unlabelled].reset_index(drop=True)
    if pd.api.types.is_float_dtype(labels) and np.all(np.mod(labels, 1.0) == 0.0):
        labels = labels.astype(np.int64)  # whole numbers written as floats: classes 0 and 1, not 0.0 and 1.0
    n_classes = labels.nunique()
    fractional = pd.api.types.is_float_dtype(labels)
    if fractional or n_classes > MAX_CLASSES:
        what = "fractional numbers" if fractional else "values"
        raise DataError(
            f"--label {label!r}: {n_classes} distinct {what}; the label must be a class column with at most "
            f"{MAX_CLASSES} classes"
        )
    counts = labels.value_counts()
    if len(counts) < 2:
        raise DataError(f"--label {label!r}: needs at least 2 classes, found {len(counts)}")
    for value, count in counts[counts < MIN_CLASS_ROWS].items():
        notes.append(
            f"class {python_value(value)!r} of {label!r} has {count} rows: all of them train the model, none is held "
            f"out for validation or evaluation (a class needs {MIN_CLASS_ROWS} rows for that)"
        )
    return frame, labels


def load_dataset(
    source: str, label: str | None = None, *, impute: bool = False, kinds: dict[str, str] | None = None
) -> Dataset:
    """Read `source` and infer column kinds (the label column kept apart); `kinds` overrides any inferred kind.

    Missing values stay as gaps, which the models learn; `impute` fills them instead (median for numbers,
    most frequent value for categories).
    """
    frame, label, image_shape, heldout = read_source(source, label)
    frame.columns = [str(c) for c in frame.columns]
    if label is not None and label not in frame.columns:
        raise DataError(f"--label {label!r}: no such column{close_matches(label, list(frame.columns))}")
    kinds = dict(kinds or {})
    _check_kinds(kinds, [c for c in frame.columns if c != label])
    if impute:
        frame = _impute(frame)
    notes: list[str] = []
    labels = None
    if label is not None:
        if heldout is not None and frame[label].isna().any():
            raise DataError(f"--label {label!r}: rows without a label in a predefined split")
        frame, labels = _labels(frame, label, notes)
    if frame.shape[1] == 0:
        raise DataError(f"--data {source!r}: no feature columns besides the label")
    if len(frame) < MIN_ROWS:
        raise DataError(
            f"--data {source!r}: {len(frame)} rows; training needs at least {MIN_ROWS} (for its training, validation "
            "and held-out parts)"
        )
    columns = []
    for name in list(frame.columns):
        try:
            inferred = infer_column(name, frame[name], image=image_shape is not None, kind=kinds.get(name))
        except ValueError as exc:
            raise DataError(str(exc)) from None
        if inferred.note is not None:
            notes.append(inferred.note)
        if inferred.column is None:
            frame = frame.drop(columns=name)
            continue
        if inferred.other:
            frame[name] = frame[name].map(lambda v, rest=inferred.other: OTHER_LABEL if python_value(v) in rest else v)
        columns.append(inferred.column)
    if not columns:
        raise DataError(f"--data {source!r}: no usable feature columns ({'; '.join(notes)})")
    classes = None
    if labels is not None:
        classes = tuple(python_value(v) for v in sorted(labels.unique(), key=lambda v: (str(type(v)), v)))
    return Dataset(source, frame, labels, tuple(columns), classes, image_shape, heldout, tuple(notes))


def split_dataset(dataset: Dataset, seed: int) -> Split:
    """Held-out part (the KEEL fold, or a stratified 20%), then a stratified 10% validation part. The rows of a
    class smaller than MIN_CLASS_ROWS all go to training."""

    positions = np.arange(len(dataset.features))
    strata = dataset.labels.to_numpy() if dataset.labels is not None else None
    kept = np.zeros(len(positions), dtype=bool)  # rows of classes too small to split
    if dataset.labels is not None:
        counts = dataset.labels.value_counts()
        kept = dataset.labels.isin(counts.index[counts < MIN_CLASS_ROWS]).to_numpy()
    splittable = positions[~kept]
    if dataset.heldout_index is not None:
        heldout = np.sort(dataset.heldout_index)
        rest = np.setdiff1d(splittable, heldout)
    else:
        rest, heldout = _stratified(splittable, strata, HELDOUT_FRACTION, seed, dataset.source)
    train, validation = _stratified(rest, strata, VALIDATION_FRACTION, seed, dataset.source)
    train = np.union1d(train, np.setdiff1d(positions[kept], heldout))
    return Split(np.sort(train), np.sort(validation), np.sort(heldout))


def _stratified(
    positions: np.ndarray, strata: np.ndarray | None, fraction: float, seed: int, source: str
) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    try:
        kept, taken = train_test_split(
            positions, test_size=fraction, random_state=seed, stratify=None if strata is None else strata[positions]
        )
    except ValueError as exc:  # a class too small for a stratified part (a tiny predefined split)
        raise DataError(f"--data {source!r}: cannot hold out a part per class ({exc})") from None
    return kept, taken


def build_schema(dataset: Dataset, train: np.ndarray) -> Schema:
    """The manifest schema: column kinds plus ranges, grids, missing rates and class priors seen in the training
    rows."""
    frame = dataset.features.iloc[train]
    columns = []
    for col in dataset.columns:
        numbers = values_from_series(col, frame[col.name])
        present = numbers[~np.isnan(numbers)]
        if present.size == 0:
            raise DataError(f"column {col.name!r} has no values in the training rows")
        missing_rate = round(float(np.isnan(numbers).mean()), 6)
        if col.kind == "categorical":
            columns.append(dataclasses.replace(col, missing_rate=missing_rate))
        else:
            low, high = float(present.min()), float(present.max())
            step = grid_step(col, present)
            columns.append(dataclasses.replace(col, min=low, max=high, step=step, missing_rate=missing_rate))
    label = None
    if dataset.labels is not None and dataset.classes is not None:
        counts = dataset.labels.iloc[train].value_counts()
        priors = tuple(float(counts.get(c, 0)) / len(train) for c in dataset.classes)
        if min(priors) == 0.0:
            missing = [c for c, p in zip(dataset.classes, priors) if p == 0.0]
            raise DataError(f"label classes {missing} have no training rows; the model could not learn them")
        label = LabelSpec(str(dataset.labels.name), str(dataset.labels.dtype), dataset.classes, priors)
    return Schema(tuple(columns), label, dataset.image_shape)


def encode_rows(frame: pd.DataFrame, schema: Schema) -> np.ndarray:
    """Frame -> float32 [N, D] in graph order: numbers, category codes, datetime units; NaN where missing."""
    out = np.empty((len(frame), schema.width), dtype=np.float32)
    for j, col in enumerate(schema.columns):
        if col.name not in frame.columns:
            hint = close_matches(col.name, list(frame.columns))
            raise DataError(f"column {col.name!r} is missing from the rows{hint}")
        try:
            out[:, j] = values_from_series(col, frame[col.name])
        except ValueError as exc:
            raise DataError(str(exc)) from None
    return out


def decode_rows(rows: np.ndarray, schema: Schema) -> pd.DataFrame:
    """float32 [N, D] from a graph -> frame with the training data's column names, dtypes, labels and formats,
    finished as the server finishes them (ranges, decimals, gaps)."""
    values = finish_rows(schema, rows)
    return pd.DataFrame({col.name: series_from_values(col, v) for col, v in zip(schema.columns, values)})


def encode_labels(labels: pd.Series, schema: Schema) -> np.ndarray:
    """Label values -> int64 class indices into `schema.label.classes`."""
    assert schema.label is not None
    try:
        codes = label_codes(labels, schema.label.classes, schema.label.name, allow_missing=False)
    except ValueError as exc:
        raise DataError(str(exc)) from None
    return codes.astype(np.int64)


@dataclass(frozen=True)
class Prepared:
    """A source as training and evaluation use it: split, schema from the training rows, every row encoded."""

    dataset: Dataset
    split: Split
    schema: Schema
    rows: np.ndarray  # float32 [N, D], `encode_rows`
    labels: np.ndarray  # int64 [N] class indices (all 0 without a label column)


def prepare_data(
    data: str, label: str | None, impute: bool, seed: int, kinds: dict[str, str] | None = None
) -> Prepared:
    """Load, split with `seed` and encode `data`; the same arguments always give the same rows and parts."""
    dataset = load_dataset(data, label, impute=impute, kinds=kinds)
    split = split_dataset(dataset, seed)
    schema = build_schema(dataset, split.train)
    rows = encode_rows(dataset.features, schema)
    labels = encode_labels(dataset.labels, schema) if dataset.labels is not None else np.zeros(len(rows), np.int64)
    return Prepared(dataset, split, schema, rows, labels)
