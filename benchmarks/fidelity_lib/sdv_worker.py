"""Fit one SDV single-table synthesizer with its defaults on a CSV and write as many sampled rows as asked.

Runs inside SDV's own virtual environment (`benchmarks/fidelity.py` creates it), by path, so it imports
nothing from this repository:

    .venv-sdv/bin/python benchmarks/fidelity_lib/sdv_worker.py --train train.csv --synthesizer tvae \
        --rows 1000 --output sample.csv [--epochs N] [--seed 0]

Prints one JSON line: fit seconds (wall and this process's CPU) of `synthesizer.fit` alone, sample seconds,
versions and the detected metadata. One torch thread, as synthserve's side runs.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time

SYNTHESIZERS = ("gaussian_copula", "tvae", "ctgan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", required=True)
    parser.add_argument("--synthesizer", required=True, choices=SYNTHESIZERS)
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--epochs", type=int, default=None, help="TVAE / CTGAN epochs (default: SDV's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import numpy as np
    import pandas as pd
    import sdv
    import torch
    from sdv.metadata import Metadata
    from sdv.single_table import CTGANSynthesizer, GaussianCopulaSynthesizer, TVAESynthesizer

    torch.set_num_threads(1)
    data = pd.read_csv(args.train)
    # SDV 2.x has neither 1.x's SingleTableMetadata nor Metadata.detect_from_dataframe, and its synthesizers take
    # and return {table name: frame}: detection and calls as a user of 2.x writes them, defaults included.
    tables = {"table": data}
    metadata = Metadata.detect_from_dataframes(tables)
    kinds = {"gaussian_copula": GaussianCopulaSynthesizer, "tvae": TVAESynthesizer, "ctgan": CTGANSynthesizer}
    options = {"epochs": args.epochs} if args.epochs is not None and args.synthesizer != "gaussian_copula" else {}
    synthesizer = kinds[args.synthesizer](metadata, **options)
    # The first optimizer of a process imports torch._dynamo (seconds): done here, outside the timed fit, as
    # synthserve's loop finds it imported.
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    wall, cpu = time.perf_counter(), time.process_time()
    synthesizer.fit(tables)
    fit_seconds, fit_cpu_seconds = time.perf_counter() - wall, time.process_time() - cpu
    started = time.perf_counter()
    (sample,) = synthesizer.sample(num_rows=args.rows).values()
    sample_seconds = time.perf_counter() - started
    sample.to_csv(args.output, index=False)
    print(
        json.dumps(
            {
                "fit_seconds": round(fit_seconds, 3),
                "fit_cpu_seconds": round(fit_cpu_seconds, 3),
                "sample_seconds": round(sample_seconds, 3),
                "sdv_version": sdv.__version__,
                "torch_version": torch.__version__,
                "metadata": metadata.to_dict()["tables"]["table"],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
