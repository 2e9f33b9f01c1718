"""Train every family on 5 KEEL data sets (fold 0 held out) and tabulate training time, C2ST AUC and NLL.

    .venv/bin/python benchmarks/keel_training.py [--datasets a b ...] [--output results.json]

One torch thread, CPU, seed 0. Training seconds cover the training loop only (not export or evaluation):
wall clock and this process's CPU time (the fair figure when the machine is shared and loaded).
C2ST AUC: a gradient-boosted classifier separating synthetic from held-out real rows (0.5 = indistinguishable).
Held-out NLL: -mean log p(x) in nats per row on the held-out fold, from the exported ONNX graph.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from training.models import FAMILIES

__all__ = ["DATASETS", "main"]

# A few thousand rows each: mixed categorical/continuous, integer-valued, continuous, all-categorical.
DATASETS = ("abalone19", "page-blocks0", "shuttle-2_vs_5", "segment0", "kr-vs-k-zero-one_vs_draw")


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="*", default=list(DATASETS))
    parser.add_argument("--families", nargs="*", default=list(FAMILIES))
    parser.add_argument("--output", type=Path, default=None, help="also write the results as JSON")
    args = parser.parse_args(argv)
    import torch

    from synthserve.contract import load_manifest
    from training.data import load_dataset
    from training.pipeline import TrainRequest, train_and_publish

    torch.set_num_threads(1)
    results = []
    with tempfile.TemporaryDirectory() as store:
        for dataset in args.datasets:
            rows = len(load_dataset(f"keel:{dataset}").features)
            for family in args.families:
                started = time.perf_counter()
                path = train_and_publish(
                    TrainRequest(f"keel:{dataset}", family, f"{dataset}-{family}", Path(store), progress=False)
                )
                assert path is not None
                metrics = load_manifest(path).metrics
                results.append(
                    {
                        "dataset": dataset,
                        "rows": rows,
                        "family": family,
                        "training_seconds": metrics["training_seconds"],
                        "training_cpu_seconds": metrics["training_cpu_seconds"],
                        "epochs": metrics["epochs_run"],
                        "c2st_auc": metrics["c2st_auc"],
                        "heldout_nll": metrics.get("heldout_nll"),
                        "total_seconds": round(time.perf_counter() - started, 1),
                    }
                )
                print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    print("| data set (rows) | family | training s (wall) | training s (CPU) | epochs | C2ST AUC | held-out NLL |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['dataset']} ({r['rows']}) | {r['family']} | {r['training_seconds']:.1f} | "
            f"{r['training_cpu_seconds']:.1f} | {r['epochs']} | "
            f"{_fmt(r['c2st_auc'], 3)} | {_fmt(r['heldout_nll'], 2)} |"
        )
    if args.output is not None:
        args.output.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
