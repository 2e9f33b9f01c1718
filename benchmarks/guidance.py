"""Classifier-free guidance: what the weight w does to a diffusion model's rows, to choose the served default.

For every model of `--model-store` with a `sample_guided` graph (conditional diffusion), and each weight of
`--weights`, rows are drawn through the exported graphs by the server's rule (`training.exported.ExportedModel`,
seed 7, as training's own evaluation draws them) and measured against the version's own split of its training
data (`prepare_data` with the manifest's source, label and seed):
- `c2st`: two-sample AUC of synthetic against held-out real rows, label included (0.5: indistinguishable);
- `ks` / `tv`: mean per-column KS statistic (scalar columns) / total variation (categorical columns);
- `class_acc`: balanced accuracy with which a classifier trained on the real training rows finds the requested
  class in the synthetic rows (how class-faithful the rows are);
- `tstr`: ROC AUC on held-out real rows of a classifier trained on synthetic rows (training's utility figure;
  `trtr` is the same classifier trained on the real rows).
Usage: python benchmarks/guidance.py [--model-store model_store] [--models a,b] [--weights 0,0.5,1,1.5,2,3]
"""

# ruff: noqa: E402  (sys.path is fixed before the package imports)
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]

import argparse
import time

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import balanced_accuracy_score
from threadpoolctl import threadpool_limits

from synthserve.contract import latest_versions, load_manifest
from training.data import Prepared
from training.evaluate import sample_metrics
from training.exported import ExportedModel
from training.features import EVALUATION_SEED, design_matrix, served_rows
from training.reevaluate import prepare_version_data
from training.utility import utility_metrics


def guided_models(store: Path) -> list[str]:
    """Names of the store's models whose latest version exports `sample_guided`."""
    return [
        name for name, version in latest_versions(store).items() if "sample_guided" in load_manifest(version).graphs
    ]


def class_accuracy(prepared: Prepared, synthetic: np.ndarray, requested: np.ndarray) -> float:
    """Balanced accuracy of a classifier of the real training rows on synthetic rows drawn for `requested`."""
    train = prepared.split.train
    clf = HistGradientBoostingClassifier(max_iter=100, random_state=0)
    with threadpool_limits(limits=1):
        clf.fit(design_matrix(prepared.rows[train], None, prepared.schema), prepared.labels[train])
        predicted = clf.predict(design_matrix(synthetic, None, prepared.schema))
    return float(balanced_accuracy_score(requested, predicted))


def measure(model: ExportedModel, prepared: Prepared, guidance: float) -> dict[str, float]:
    schema = model.manifest.schema
    heldout, train = prepared.split.heldout, prepared.split.train
    labels = prepared.labels[heldout]
    synthetic = served_rows(model.sample(labels, seed=EVALUATION_SEED, guidance=guidance), schema)
    metrics = sample_metrics(prepared.rows[heldout], labels, synthetic, schema)
    utility = utility_metrics(
        model, prepared.rows[train], prepared.labels[train], prepared.rows[heldout], labels, guidance=guidance
    )
    return {
        "c2st": metrics["c2st_auc"],
        "ks": metrics["mean_ks"] if metrics["mean_ks"] is not None else float("nan"),
        "tv": metrics["mean_tv"] if metrics["mean_tv"] is not None else float("nan"),
        "class_acc": class_accuracy(prepared, synthetic, labels),
        "tstr": utility["tstr_auc"] if utility else float("nan"),
        "trtr": utility["trtr_auc"] if utility else float("nan"),
    }


def _mean(values: list[float]) -> float:
    """Mean of the finite values (a table without categorical columns has no `tv`), NaN when there are none."""
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-store", type=Path, default=ROOT / "model_store")
    parser.add_argument("--models", default=None, help="comma-separated (default: every model with guidance)")
    parser.add_argument("--weights", default="0,0.5,1,1.5,2,3", help="guidance weights w, comma-separated")
    args = parser.parse_args(argv)
    weights = [float(w) for w in args.weights.split(",")]
    names = args.models.split(",") if args.models else guided_models(args.model_store)
    if not names:
        print(f"no model with a sample_guided graph in {args.model_store}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    columns = ("c2st", "ks", "tv", "class_acc", "tstr", "trtr")
    print(f"{'model':<28} {'w':>4} " + " ".join(f"{c:>9}" for c in columns))
    means: dict[float, list[dict[str, float]]] = {w: [] for w in weights}
    for name in names:
        model = ExportedModel(latest_versions(args.model_store)[name])
        prepared = prepare_version_data(model.manifest)
        for w in weights:
            figures = measure(model, prepared, w)
            means[w].append(figures)
            print(f"{name:<28} {w:>4g} " + " ".join(f"{figures[c]:>9.3f}" for c in columns), flush=True)
    print(f"{'mean over ' + str(len(names)) + ' models':<28}")
    for w in weights:
        row = {c: _mean([f[c] for f in means[w]]) for c in columns}
        print(f"{'':<28} {w:>4g} " + " ".join(f"{row[c]:>9.3f}" for c in columns))
    print(f"# {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
