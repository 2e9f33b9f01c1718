"""Retrain the models shipped under model_store/, deterministically (seed 0, CPU, one thread).

`make models` runs `python -m training.shipped --model-store model_store`. The store is regenerated, not
accumulated: each shipped name is deleted first, so every shipped model is version 1.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from training.models import FAMILIES
from training.pipeline import TrainRequest, train_and_publish

__all__ = ["SHIPPED", "ShippedModel", "main"]


@dataclass(frozen=True)
class ShippedModel:
    name: str
    data: str
    family: str
    family_config: dict[str, Any] = field(default_factory=dict)
    train_config: dict[str, Any] = field(default_factory=dict)


_SOURCES = {"digits": "sklearn:digits", "breast-cancer": "sklearn:breast_cancer", "abalone19": "keel:abalone19"}
# 64 pixel columns need a wider, deeper flow than the default for class-faithful samples (3.3 MB version),
# and the digits GAN a longer schedule than the KEEL-sized default (about 2 minutes instead of 1).
_FAMILY_OVERRIDES: dict[str, dict[str, Any]] = {"digits-flow": {"hidden": 96, "n_layers": 10}}
_TRAIN_OVERRIDES: dict[str, dict[str, Any]] = {"digits-gan": {"epochs": 800, "patience": 200}}
SHIPPED: tuple[ShippedModel, ...] = tuple(
    ShippedModel(
        f"{stem}-{family}",
        source,
        family,
        _FAMILY_OVERRIDES.get(f"{stem}-{family}", {}),
        _TRAIN_OVERRIDES.get(f"{stem}-{family}", {}),
    )
    for stem, source in _SOURCES.items()
    for family in FAMILIES
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.shipped", description=__doc__)
    parser.add_argument("--model-store", type=Path, default=Path("model_store"))
    parser.add_argument("--only", nargs="*", default=None, help="retrain just these shipped names")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    known = {m.name for m in SHIPPED}
    unknown = set(args.only or ()) - known
    if unknown:
        print(f"--only: unknown shipped models {sorted(unknown)} (known: {sorted(known)})", file=sys.stderr)
        return 2
    for model in SHIPPED:
        if args.only is not None and model.name not in args.only:
            continue
        shutil.rmtree(args.model_store / model.name, ignore_errors=True)
        started = time.perf_counter()
        path = train_and_publish(
            TrainRequest(
                data=model.data,
                family=model.family,
                name=model.name,
                model_store=args.model_store,
                seed=0,
                device="cpu",
                progress=False,
                family_config=model.family_config,
                train_config=model.train_config,
            )
        )
        print(f"{path}  ({time.perf_counter() - started:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
