"""Utility: the classifier's AUC is a macro average over the classes present in the test rows."""

from __future__ import annotations

import numpy as np

from training.utility import classifier_auc


def test_utility_auc_is_a_macro_average_over_the_classes_present() -> None:
    rng = np.random.default_rng(0)
    y_train = np.repeat([0, 1, 2], 100)
    x_train = y_train[:, None] + rng.normal(0, 0.1, (300, 1))
    y_test = np.array([0, 1] * 50)  # class 2 absent from the test rows
    x_test = y_test[:, None] + rng.normal(0, 0.1, (100, 1))
    assert classifier_auc(x_train, y_train, x_test, y_test, n_classes=3) == 1.0
    assert classifier_auc(x_train, y_train, x_test, 1 - y_test, n_classes=3) == 0.0
