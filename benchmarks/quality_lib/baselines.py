"""The methods synthserve must beat: no resampling, random oversampling and SMOTE; IsolationForest and kNN distance.

A resampler returns only the minority rows it adds, so synthserve's generators plug into the same place.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from imblearn.over_sampling import SMOTE, RandomOverSampler
from sklearn.ensemble import IsolationForest
from sklearn.neighbors import NearestNeighbors

__all__ = [
    "ANOMALY_BASELINES",
    "RESAMPLERS",
    "iforest_scores",
    "knn_distance_scores",
    "random_oversample",
    "smote",
]

SMOTE_NEIGHBORS = 5
KNN_ANOMALY_NEIGHBORS = 5


def _no_rows(x: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    return np.empty((0, x.shape[1]))


def random_oversample(x: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    """Minority rows drawn with replacement until the classes are balanced (imbalanced-learn's sampler)."""
    x_resampled, _ = RandomOverSampler(random_state=seed).fit_resample(x, y)
    return np.asarray(x_resampled)[len(x) :]


def smote(x: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    """SMOTE with k = min(5, n_minority - 1)."""
    n_minority = int(y.sum())
    if n_minority < 2:  # SMOTE needs a neighbour; a single row can only be copied
        return random_oversample(x, y, seed)
    sampler = SMOTE(k_neighbors=min(SMOTE_NEIGHBORS, n_minority - 1), random_state=seed)
    x_resampled, _ = sampler.fit_resample(x, y)
    return np.asarray(x_resampled)[len(x) :]  # imbalanced-learn appends the new rows after the originals


RESAMPLERS: dict[str, Callable[[np.ndarray, np.ndarray, int], np.ndarray]] = {
    "none": _no_rows,
    "ros": random_oversample,
    "smote": smote,
}


def iforest_scores(x_normal: np.ndarray, x_test: np.ndarray) -> np.ndarray:
    """Anomaly score (higher = more anomalous) of an IsolationForest fitted on normal rows."""
    return -IsolationForest(random_state=0).fit(x_normal).score_samples(x_test)


def knn_distance_scores(x_normal: np.ndarray, x_test: np.ndarray) -> np.ndarray:
    """Mean distance to the 5 nearest normal training rows."""
    k = min(KNN_ANOMALY_NEIGHBORS, len(x_normal))
    distances, _ = NearestNeighbors(n_neighbors=k).fit(x_normal).kneighbors(x_test)
    return distances.mean(axis=1)


ANOMALY_BASELINES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "iforest": iforest_scores,
    "knn": knn_distance_scores,
}
