"""`synthserve train` and `synthserve evaluate` (argv[0] is the subcommand)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

__all__ = ["main"]


def _train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="synthserve train", description="Train, export and publish a model.")
    parser.add_argument("--data", required=True, help="CSV / Parquet / .npz path, sklearn:NAME or keel:NAME[:FOLD]")
    parser.add_argument("--model", required=True, choices=("vae", "gan", "flow"))
    parser.add_argument("--name", required=True, help="model name in the store")
    parser.add_argument("--label", default=None, help="label column (default: target / Class for bundled sets)")
    parser.add_argument("--model-store", type=Path, default=Path("model_store"))
    parser.add_argument("--epochs", type=int, default=None, help="maximum epochs (early stopping may end sooner)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--impute", action="store_true", help="fill missing values instead of refusing them")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--onnx-exporter",
        choices=("dynamo", "torchscript"),
        default="dynamo",
        help="dynamo: smaller, faster graphs (default); torchscript: about 4x quicker export, for many models",
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the report's PNG plots (report.json stays)")
    return parser


def _evaluate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="synthserve evaluate", description="Re-evaluate a published model.")
    parser.add_argument("--model-store", type=Path, default=Path("model_store"))
    parser.add_argument("--name", required=True)
    parser.add_argument("--version", type=int, default=None, help="default: latest")
    return parser


def _train(argv: list[str]) -> int:
    args = _train_parser().parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        print(f"--epochs must be >= 1, got {args.epochs}", file=sys.stderr)
        return 2
    if not args.name or "/" in args.name or args.name.startswith("."):
        print(f"--name {args.name!r}: must be a non-empty name without '/' and not starting with '.'", file=sys.stderr)
        return 2
    import torch
    import torch.distributed as dist

    from training.data import DataError
    from training.pipeline import TrainRequest, train_and_publish

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("--device cuda: CUDA is not available on this machine", file=sys.stderr)
        return 2
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
        if device.startswith("cuda"):
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    request = TrainRequest(
        data=args.data,
        family=args.model,
        name=args.name,
        model_store=args.model_store,
        label=args.label,
        seed=args.seed,
        epochs=args.epochs,
        device=device,
        impute=args.impute,
        progress=not args.no_progress,
        onnx_exporter=args.onnx_exporter,
        plots=not args.no_plots,
    )
    try:
        path = train_and_publish(request)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if distributed:
            dist.barrier()
            dist.destroy_process_group()
    if path is not None:
        print(path)
    return 0


def _evaluate(argv: list[str]) -> int:
    args = _evaluate_parser().parse_args(argv)
    from training.pipeline import evaluate_published

    try:
        path = evaluate_published(args.model_store, args.name, args.version)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(path / "report.json")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"train": _train, "evaluate": _evaluate}
    if not argv or argv[0] not in commands:
        print("usage: synthserve {train,evaluate} [options]", file=sys.stderr)
        return 2
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
