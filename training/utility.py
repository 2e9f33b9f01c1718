"""Utility (labelled tables): train on synthetic, test on real (TSTR) against train on real (TRTR).

The same classifier learns the class from synthetic rows drawn for a sample of the training rows' classes, then
from those training rows, and is scored on the held-out rows: ROC AUC, one-vs-rest macro average over the classes
present.
"""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits

from training.exported import ExportedModel
from training.features import EVALUATION_SEED, MAX_PAIRED_ROWS, design_matrix, served_rows

__all__ = ["classifier_auc", "utility_metrics"]


def classifier_auc(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, n_classes: int
) -> float:
    """ROC AUC on the test rows of a classifier fitted on the training rows: one-vs-rest, macro over the classes
    present in the test rows (for two classes, the plain AUC)."""
    # Smaller than C2ST's: it is fitted once per class per round, twice, and digits has 10 classes.
    clf = HistGradientBoostingClassifier(max_iter=50, max_leaf_nodes=15, random_state=0)
    with threadpool_limits(limits=1):
        clf.fit(x_train, y_train)
        proba = clf.predict_proba(x_test)
    scores = np.zeros((len(x_test), n_classes))
    scores[:, clf.classes_] = proba
    return float(np.mean([roc_auc_score(y_test == c, scores[:, c]) for c in np.unique(y_test)]))


def utility_metrics(
    model: ExportedModel,
    train_rows: np.ndarray,
    train_labels: np.ndarray,
    heldout_rows: np.ndarray,
    heldout_labels: np.ndarray,
    guidance: float = 1.0,
) -> dict[str, float | int] | None:
    """TSTR against TRTR (module docstring), synthetic rows drawn with the guidance weight `guidance` (1: plain);
    None for an unlabelled table or a part with a single class."""
    schema = model.manifest.schema
    rng = np.random.default_rng(EVALUATION_SEED)
    index = np.sort(rng.choice(len(train_rows), min(len(train_rows), MAX_PAIRED_ROWS), replace=False))
    labels = train_labels[index]
    if schema.label is None or len(np.unique(labels)) < 2 or len(np.unique(heldout_labels)) < 2:
        return None
    synthetic = served_rows(model.sample(labels, seed=EVALUATION_SEED, guidance=guidance), schema)
    test = design_matrix(heldout_rows, None, schema)

    def auc(rows: np.ndarray) -> float:
        return classifier_auc(design_matrix(rows, None, schema), labels, test, heldout_labels, schema.n_classes)

    return {"tstr_auc": auc(synthetic), "trtr_auc": auc(train_rows[index]), "n_train_rows": len(index)}
