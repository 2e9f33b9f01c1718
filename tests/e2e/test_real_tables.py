"""A table as users bring it, through `synthserve train` -> a real gRPC server -> the Python client.

Whole numbers written as floats with gaps, a 2-decimal currency, ISO dates, a boolean, missing values at
known rates, a 500-level category and a row-unique id: the rows that come back have the training data's
kinds, ranges, decimals, date format and missing rates, and rows with gaps can be scored and encoded.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from serving.client import SynthClient
from synthserve.contract import OTHER_LABEL, load_manifest
from tests.serving.conftest import ServerThread, make_config

N_ROWS = 1500
GAP_RATES = {"children": 0.10, "price": 0.05, "city": 0.08}


def user_table(n_rows: int = N_ROWS, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    label = rng.choice(["churn", "stay"], n_rows, p=[0.3, 0.7])
    cities = np.array([f"city_{i:03d}" for i in range(500)])
    weights = 1.0 / (np.arange(500) + 5.0)
    city = np.concatenate([cities, rng.choice(cities, n_rows - 500, p=weights / weights.sum())])
    frame = pd.DataFrame(
        {
            "customer_id": [f"C{i:06d}" for i in rng.permutation(n_rows)],
            "children": rng.poisson(1.5, n_rows).astype(float) + (label == "churn"),
            "price": np.round(rng.lognormal(3, 0.5, n_rows) + 7.0 * (label == "churn"), 2),
            "signup": (pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 700, n_rows), "D")).strftime(
                "%Y-%m-%d"
            ),
            "member": rng.random(n_rows) < 0.4,
            "city": rng.permutation(city),
            "age": rng.integers(18, 90, n_rows).astype(float),
            # measured in 0.005 m steps, written with 3 decimals: a grid the rows must keep
            "length_m": np.round(
                np.round(np.random.default_rng(seed + 1).normal(1.2, 0.15, n_rows) / 0.005) * 0.005, 3
            ),
            "label": label,
        }
    )
    for column, rate in GAP_RATES.items():
        frame.loc[rng.random(n_rows) < rate, column] = np.nan
    return frame


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, pd.DataFrame, str]]:
    directory = tmp_path_factory.mktemp("real")
    user_table().to_csv(directory / "customers.csv", index=False)
    table = pd.read_csv(directory / "customers.csv")  # as a user's pandas reads it back: floats, NaN, text dates
    synthserve = Path(sys.executable).parent / "synthserve"
    argv = [str(synthserve), "train", "--data", str(directory / "customers.csv"), "--label", "label"]
    argv += ["--model", "flow", "--name", "customers", "--model-store", str(directory / "store")]
    argv += ["--epochs", "6", "--threads", "1", "--no-progress", "--no-plots"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    yield directory / "store", table, done.stderr


@pytest.fixture(scope="module")
def client(trained: tuple[Path, pd.DataFrame, str]) -> Iterator[SynthClient]:
    server = ServerThread(make_config(trained[0]))
    try:
        with SynthClient(server.target) as synth:
            yield synth
    finally:
        server.stop()


def test_training_says_what_it_left_out_and_gathered(trained: tuple[Path, pd.DataFrame, str]) -> None:
    _, _, stderr = trained
    assert "note: column 'customer_id' left out: every row has its own value (an identifier)" in stderr
    levels = re.search(r"note: column 'city': (\d+) levels; the 63 most frequent are kept", stderr)
    assert levels is not None and int(levels.group(1)) > 450  # 500 cities, some only in rows with a gap
    columns = {c.name: c for c in load_manifest(trained[0] / "customers" / "1").schema.columns}
    assert {name: c.kind for name, c in columns.items()} == {
        "children": "categorical",
        "price": "continuous",
        "signup": "integer",
        "member": "categorical",
        "city": "categorical",
        "age": "integer",
        "length_m": "continuous",
    }
    assert columns["length_m"].decimals == 3 and columns["length_m"].step == 5 and columns["age"].step == 1


def test_sampled_rows_keep_kinds_ranges_decimals_dates_and_gaps(
    trained: tuple[Path, pd.DataFrame, str], client: SynthClient
) -> None:
    schema = load_manifest(trained[0] / "customers" / "1").schema
    columns = {c.name: c for c in schema.columns}
    rows = client.sample("customers", 6000, seed=11)
    assert list(rows.columns) == [*columns, "label"]
    assert rows.dtypes.to_dict() == {
        "children": np.dtype("float64"),
        "price": np.dtype("float64"),
        "signup": np.dtype("O"),
        "member": np.dtype("bool"),
        "city": np.dtype("O"),
        "age": np.dtype("float64"),
        "length_m": np.dtype("float64"),
        "label": np.dtype("O"),
    }
    _, table, _ = trained
    for name in ("children", "price", "age", "length_m"):
        present = rows[name].dropna()
        assert table[name].min() <= present.min() and present.max() <= table[name].max(), name
    assert np.all(np.mod(rows["age"], 1.0) == 0.0) and np.all(np.mod(rows["children"].dropna(), 1.0) == 0.0)
    cents = rows["price"].dropna() * 100
    assert np.abs(cents - np.round(cents)).max() < 1e-6  # two decimals, as written
    steps = (rows["length_m"] - table["length_m"].min()) / 0.005
    assert np.abs(steps - np.round(steps)).max() < 1e-6  # on the 0.005 grid it was measured on
    assert rows["length_m"].nunique() > 30 and client.describe("customers").columns[-1].step == 5
    assert rows["signup"].str.fullmatch(r"\d{4}-\d{2}-\d{2}").all()
    dates = pd.to_datetime(rows["signup"], format="%Y-%m-%d")
    assert dates.min() >= pd.Timestamp("2024-01-01") and dates.max() <= pd.Timestamp("2025-12-01")
    assert set(rows["city"].dropna()) <= {*columns["city"].categories, OTHER_LABEL}  # type: ignore[misc]
    for name in ("children", "price", "city"):
        assert abs(rows[name].isna().mean() - columns[name].missing_rate) <= 0.02, name
    assert not rows[["signup", "member", "age", "label"]].isna().any().any()


def test_rows_with_gaps_are_scored_and_encoded(trained: tuple[Path, pd.DataFrame, str], client: SynthClient) -> None:
    _, table, _ = trained
    rows = table.drop(columns=["customer_id"]).head(400)
    assert rows[list(GAP_RATES)].isna().any().all()  # gaps in every gappy column, and cities seen once only
    scores = client.score("customers", rows, fpr=0.05)
    assert np.isfinite(scores["log_density"]).all() and len(scores) == len(rows)
    latent = client.encode("customers", rows)
    assert latent.shape[0] == len(rows) and np.isfinite(latent).all()


def test_conditions_on_whole_numbers_booleans_categories_and_ranges(client: SynthClient) -> None:
    """A trained model's rows under conditions of every kind: exact counts, every row meets them, reproducible,
    and the stream gives the unary rows."""
    conditions: dict[str, object] = {"age": 40, "children": (1, 3), "member": True, "price": (20.0, 35.5)}
    rows = client.sample("customers", 120, proportions={"churn": 1, "stay": 1}, seed=3, conditions=conditions)
    assert len(rows) == 120 and rows["label"].value_counts().to_dict() == {"churn": 60, "stay": 60}
    assert (rows["age"] == 40).all() and rows["children"].between(1, 3).all() and rows["member"].all()
    assert rows["price"].between(20.0, 35.5).all()
    again = client.sample("customers", 120, proportions={"churn": 1, "stay": 1}, seed=3, conditions=conditions)
    pd.testing.assert_frame_equal(rows, again)
    streamed = client.sample_stream(
        "customers", 120, proportions={"churn": 1, "stay": 1}, seed=3, conditions=conditions, chunk_rows=50
    )
    pd.testing.assert_frame_equal(pd.concat(list(streamed), ignore_index=True), rows)
    city = client.sample("customers", 5, label="stay", seed=1, conditions={"city": "city_000"})
    assert set(city["city"]) == {"city_000"}
