"""In-process cost of encoding response tables (`serving.tables.TableEncoder`, finishing included) per shipped schema.

    .venv/bin/python benchmarks/tables.py [--model-store model_store] [--rows 1 4096]

To compare with an earlier commit, run the same file with that tree first on the path:
`git worktree add /tmp/before REV && PYTHONPATH=/tmp/before .venv/bin/python benchmarks/tables.py
--model-store /tmp/before/model_store`.
"""

# ruff: noqa: E402  (sys.path is fixed before the package imports, see below)
from __future__ import annotations

import os
import sys
from pathlib import Path

# Run as `python benchmarks/tables.py`, the tree to measure (PYTHONPATH, else this repository) must lead sys.path
# and this folder must not: its serving.py would shadow the serving package.
ROOT = Path(os.environ.get("PYTHONPATH", "").split(os.pathsep)[0] or Path(__file__).resolve().parents[1]).resolve()
HERE = Path(__file__).resolve().parent
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() not in (ROOT, HERE)]

import argparse
import time

import numpy as np

__all__ = ["main"]

MODELS = ("breast-cancer-flow", "digits-flow", "abalone19-flow")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-store", type=Path, default=Path("model_store"))
    parser.add_argument("--rows", type=int, nargs="*", default=[1, 4096])
    parser.add_argument("--seconds", type=float, default=1.0, help="timing per cell")
    args = parser.parse_args(argv)
    from serving.tables import TableEncoder
    from synthserve.contract import load_manifest

    print("| model | rows | us per table | ns per row | bytes |")
    print("|---|---:|---:|---:|---:|")
    for name in MODELS:
        schema = load_manifest(args.model_store / name / "1").schema
        encoder = TableEncoder(schema)
        for n_rows in args.rows:
            rows = np.random.default_rng(0).normal(size=(n_rows, schema.width)).astype(np.float32)
            labels = np.zeros(n_rows, np.int64)
            size = encoder.encode(rows, labels).ByteSize()
            count, started = 0, time.perf_counter()
            while time.perf_counter() - started < args.seconds:
                encoder.encode(rows, labels).ByteSize()
                count += 1
            seconds = (time.perf_counter() - started) / count
            print(f"| {name} | {n_rows} | {seconds * 1e6:.1f} | {seconds / n_rows * 1e9:.0f} | {size} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
