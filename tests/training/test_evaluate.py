"""Evaluation metrics behave as their definitions say."""

from __future__ import annotations

import numpy as np

from synthserve.contract import Column, LabelSpec, Schema
from training.evaluate import _classifier_auc, _column_distances, _privacy, _served, c2st_auc


def test_c2st_separates_only_different_samples() -> None:
    rng = np.random.default_rng(0)
    real = rng.normal(size=(400, 3))
    same = rng.normal(size=(400, 3))
    shifted = rng.normal(size=(400, 3)) + np.array([1.5, 0, 0])
    assert abs(c2st_auc(real, same) - 0.5) < 0.08
    assert c2st_auc(real, shifted) > 0.8


def test_column_distances() -> None:
    schema = Schema((Column("x", "continuous", "float64"), Column("c", "categorical", "object", categories=("a", "b"))))
    real = np.array([[0.0, 0], [1.0, 0], [2.0, 1], [3.0, 1]])
    synthetic = np.array([[10.0, 0], [11.0, 0], [12.0, 0], [13.0, 0]])
    distances = _column_distances(real, synthetic, schema)
    assert distances["x"]["ks"] == 1.0
    assert distances["c"]["tv"] == 0.5


def test_generated_rows_are_judged_as_served() -> None:
    """Clipped to the training range, whole numbers and decimals rounded, a category gap (-1) back to NaN; float32
    like the encoded real rows, so a served 1.2 equals a real 1.2."""
    schema = Schema(
        (
            Column("x", "continuous", "float64", min=0.0, max=5.0, decimals=1),
            Column("n", "integer", "int64", min=0.0, max=9.0),
            Column("c", "categorical", "object", categories=("a", "b"), missing_rate=0.2),
        )
    )
    rows = np.array([[7.26, 2.6, np.nan], [1.234, -3.0, 1.0]], dtype=np.float32)
    expected = np.array([[5.0, 3.0, np.nan], [1.2, 0.0, 1.0]], dtype=np.float32)
    np.testing.assert_array_equal(_served(rows, schema), expected)


def test_exact_copies_need_every_value_gaps_included_and_the_class() -> None:
    schema = Schema(
        (
            Column("x", "continuous", "float64", missing_rate=0.5),
            Column("c", "categorical", "object", categories=("a",)),
        ),
        LabelSpec("y", "object", ("no", "yes"), (0.5, 0.5)),
    )
    train = np.array([[1.5, 0.0], [np.nan, 0.0], [-0.0, 0.0]], dtype=np.float32)
    train_labels = np.array([0, 1, 1])
    copies = np.array([[1.5, 0.0], [np.nan, 0.0], [0.0, 0.0], [1.5, 0.0]])
    privacy = _privacy(train, train_labels, copies, copies, np.array([0, 1, 1, 1]), schema)
    assert privacy["exact_copies_synthetic"] == 0.75  # the last row has another class than its twin
    assert privacy["dcr_p05_synthetic"] == 0.0 and privacy["n_query_rows"] == 4 and privacy["n_reference_rows"] == 3


def test_utility_auc_is_a_macro_average_over_the_classes_present() -> None:
    rng = np.random.default_rng(0)
    y_train = np.repeat([0, 1, 2], 100)
    x_train = y_train[:, None] + rng.normal(0, 0.1, (300, 1))
    y_test = np.array([0, 1] * 50)  # class 2 absent from the test rows
    x_test = y_test[:, None] + rng.normal(0, 0.1, (100, 1))
    assert _classifier_auc(x_train, y_train, x_test, y_test, n_classes=3) == 1.0
    assert _classifier_auc(x_train, y_train, x_test, 1 - y_test, n_classes=3) == 0.0
