"""Schema inference, missing values, splits and the rows <-> frame round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.training.mixed_data import make_mixed_frame
from training.data import build_schema, decode_rows, encode_labels, encode_rows, load_dataset, split_dataset
from training.errors import DataError


def test_csv_schema_and_round_trip(mixed_csv: Path) -> None:
    dataset = load_dataset(str(mixed_csv), "outcome")
    kinds = {c.name: c.kind for c in dataset.columns}
    assert kinds == {
        "height_cm": "continuous",
        "visits": "integer",
        "colour": "categorical",
        "member": "categorical",
        "discount": "continuous",
    }
    assert dataset.classes == ("no", "yes")
    split = split_dataset(dataset, seed=0)
    schema = build_schema(dataset, split.train)
    colour = next(c for c in schema.columns if c.name == "colour")
    assert colour.categories == ("blue", "green", "red")
    # The training rows come back as they went in (every value lies within the training range).
    training_rows = dataset.features.iloc[split.train].reset_index(drop=True)
    back = decode_rows(encode_rows(training_rows, schema), schema)
    pd.testing.assert_frame_equal(back, training_rows, check_exact=False, rtol=1e-6)
    assert schema.label is not None and abs(sum(schema.label.priors) - 1.0) < 1e-9


def test_missing_values_are_kept_as_gaps_with_their_rate_or_imputed(tmp_path: Path) -> None:
    frame = make_mixed_frame(50)
    frame.loc[[3, 7], "height_cm"] = np.nan
    frame.loc[5, "colour"] = None
    path = tmp_path / "holes.csv"
    frame.to_csv(path, index=False)
    dataset = load_dataset(str(path), "outcome")
    everything = np.arange(len(dataset.features))
    schema = build_schema(dataset, everything)
    rates = {c.name: c.missing_rate for c in schema.columns}
    assert rates == {"height_cm": 2 / 50, "visits": 0.0, "colour": 1 / 50, "member": 0.0, "discount": 0.0}
    rows = encode_rows(dataset.features, schema)
    assert np.isnan(rows[[3, 7], 0]).all() and np.isnan(rows[5, 2]) and np.isnan(rows).sum() == 3
    back = decode_rows(rows, schema)
    assert back["height_cm"].isna().sum() == 2 and back.loc[5, "colour"] is None
    imputed = load_dataset(str(path), "outcome", impute=True)
    assert not imputed.features.isna().any().any()


def test_unknown_category_is_an_error(mixed_csv: Path) -> None:
    dataset = load_dataset(str(mixed_csv), "outcome")
    schema = build_schema(dataset, split_dataset(dataset, 0).train)
    frame = dataset.features.head(3).copy()
    frame.loc[0, "colour"] = "purple"
    with pytest.raises(DataError, match=r"column 'colour': unknown value\(s\) 'purple'"):
        encode_rows(frame, schema)
    assert dataset.labels is not None
    assert set(encode_labels(dataset.labels, schema)) == {0, 1}


def test_a_class_too_small_to_split_trains_the_model_whole(tmp_path: Path) -> None:
    frame = make_mixed_frame(60)
    frame.loc[[4, 9, 30], "outcome"] = "rare"
    path = tmp_path / "tiny.csv"
    frame.to_csv(path, index=False)
    dataset = load_dataset(str(path), "outcome")
    assert dataset.classes == ("no", "rare", "yes")
    assert any("class 'rare' of 'outcome' has 3 rows: all of them train the model" in n for n in dataset.notes)
    split = split_dataset(dataset, seed=0)
    assert {4, 9, 30} <= set(split.train.tolist())
    assert len(np.intersect1d(split.train, np.concatenate([split.validation, split.heldout]))) == 0
    assert len(split.train) + len(split.validation) + len(split.heldout) == 60
    schema = build_schema(dataset, split.train)
    assert schema.label is not None and schema.label.priors[1] == 3 / len(split.train)
    short = tmp_path / "short.csv"
    make_mixed_frame(12).to_csv(short, index=False)
    with pytest.raises(DataError, match=r"--data .*: 12 rows; training needs at least 20"):
        load_dataset(str(short), "outcome")
