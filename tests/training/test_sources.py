"""Sources: files and bundled sets read into the same dataset, KEEL folds, images, and errors that name the source."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.training.mixed_data import make_mixed_frame
from training.data import load_dataset
from training.errors import DataError
from training.sources import KEEL_FOLDS


def test_parquet_matches_csv(tmp_path: Path, mixed_csv: Path) -> None:
    path = tmp_path / "mixed.parquet"
    make_mixed_frame().to_parquet(path)
    from_parquet = load_dataset(str(path), "outcome")
    from_csv = load_dataset(str(mixed_csv), "outcome")
    assert from_parquet.columns == from_csv.columns and from_parquet.classes == from_csv.classes


@pytest.mark.parametrize(
    ("source", "n_columns", "n_classes"),
    [("sklearn:digits", 64, 10), ("sklearn:breast_cancer", 30, 2), ("sklearn:wine", 13, 3), ("keel:abalone19", 8, 2)],
)
def test_bundled_sources(source: str, n_columns: int, n_classes: int) -> None:
    dataset = load_dataset(source)
    assert dataset.features.shape[1] == n_columns
    assert dataset.classes is not None and len(dataset.classes) == n_classes
    if source == "sklearn:digits":
        assert dataset.image_shape == (8, 8) and dataset.features.columns[9] == "pixel_1_1"
        assert {c.kind for c in dataset.columns} == {"integer"}
    if source.startswith("keel"):
        assert dataset.columns[0].kind == "categorical" and dataset.columns[0].categories == ("F", "I", "M")
        assert dataset.labels is not None and dataset.labels.name == "Class"


def test_keel_folds_partition_the_rows_stratified() -> None:
    held = [load_dataset(f"keel:abalone19:{k}").heldout_index for k in range(KEEL_FOLDS)]
    everything = np.sort(np.concatenate([h for h in held if h is not None]))
    dataset = load_dataset("keel:abalone19")
    assert np.array_equal(everything, np.arange(len(dataset.features)))
    assert dataset.labels is not None
    positives = [(dataset.labels.iloc[h] == "positive").sum() for h in held if h is not None]
    assert max(positives) - min(positives) <= 1
    with pytest.raises(DataError, match="fold must be in"):
        load_dataset("keel:abalone19:5")


def test_npz_images(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "images.npz"
    np.savez(path, X=rng.integers(0, 5, size=(30, 3, 4)), y=rng.integers(0, 2, 30))
    dataset = load_dataset(str(path))
    assert dataset.image_shape == (3, 4) and dataset.features.shape == (30, 12)
    assert all(c.kind == "integer" for c in dataset.columns)


@pytest.mark.parametrize(
    ("source", "label", "message"),
    [
        ("nope.csv", None, "no such file"),
        ("sklearn:iris", None, "unknown set"),
        ("keel:no_such_set", None, "not among"),
        ("sklearn:wine", "colour", "--label 'colour': no such column"),
    ],
)
def test_bad_sources_name_the_problem(source: str, label: str | None, message: str) -> None:
    with pytest.raises(DataError, match=message):
        load_dataset(source, label)
