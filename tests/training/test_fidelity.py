"""Fidelity metrics behave as their definitions say."""

from __future__ import annotations

import numpy as np

from synthserve.contract import Column, Schema
from training.fidelity import c2st_auc, column_distances


def test_c2st_separates_only_different_samples() -> None:
    rng = np.random.default_rng(0)
    real = rng.normal(size=(400, 3))
    same = rng.normal(size=(400, 3))
    shifted = rng.normal(size=(400, 3)) + np.array([1.5, 0, 0])
    assert abs(c2st_auc(real, same) - 0.5) < 0.08
    assert c2st_auc(real, shifted) > 0.8


def testcolumn_distances() -> None:
    schema = Schema((Column("x", "continuous", "float64"), Column("c", "categorical", "object", categories=("a", "b"))))
    real = np.array([[0.0, 0], [1.0, 0], [2.0, 1], [3.0, 1]])
    synthetic = np.array([[10.0, 0], [11.0, 0], [12.0, 0], [13.0, 0]])
    distances = column_distances(real, synthetic, schema)
    assert distances["x"]["ks"] == 1.0
    assert distances["c"]["tv"] == 0.5
