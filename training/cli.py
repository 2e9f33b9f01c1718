"""`synthserve train` and `synthserve evaluate` (argv[0] is the subcommand)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

__all__ = ["main"]


def _train_parser() -> argparse.ArgumentParser:
    # The registries: they import torch, which training needs right after parsing anyway.
    from training.export import ONNX_EXPORTERS
    from training.models import FAMILIES

    parser = argparse.ArgumentParser(prog="synthserve train", description="Train, export and publish a model.")
    parser.add_argument("--data", required=True, help="CSV / Parquet / .npz path, sklearn:NAME or keel:NAME[:FOLD]")
    parser.add_argument("--model", required=True, choices=FAMILIES)
    parser.add_argument("--name", required=True, help="model name in the store")
    parser.add_argument("--label", default=None, help="label column (default: target / Class for bundled sets)")
    parser.add_argument("--model-store", type=Path, default=Path("model_store"))
    parser.add_argument("--epochs", type=int, default=None, help="maximum epochs (early stopping may end sooner)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument(
        "--impute", action="store_true", help="fill missing values (median / most frequent) instead of modelling gaps"
    )
    parser.add_argument(
        "--column",
        action="append",
        default=[],
        metavar="NAME=KIND",
        help="override a column's inferred kind: continuous, integer, categorical, datetime or drop (repeatable)",
    )
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a hyperparameter of the family (e.g. coupling=spline for the flow) or of its training loop "
        "(learning_rate, batch_size, patience, weight_decay); repeatable, see docs/training.md",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--onnx-exporter",
        choices=ONNX_EXPORTERS,
        default="dynamo",
        help="dynamo: smaller, faster graphs (default); torchscript: about 4x quicker export, for many models",
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the report's PNG plots (report.json stays)")
    parser.add_argument(
        "--no-reference-rows",
        action="store_true",
        help="keep no training rows in the log_prob graph (up to 4,096 by default): no anomaly score, so "
        "ScoreDensity flags anomalies on log p(x) alone, and no class margin, so best-of-k ranks by the posterior",
    )
    parser.add_argument(
        "--accept-weak-model",
        action="store_true",
        help="publish even a model the quality gate refuses (trivially detected, collapsed or copying training "
        "rows); the verdict stays in its metrics",
    )
    return parser


def _evaluate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="synthserve evaluate", description="Re-evaluate a published model.")
    parser.add_argument("--model-store", type=Path, default=Path("model_store"))
    parser.add_argument("--name", required=True)
    parser.add_argument("--version", type=int, default=None, help="default: latest")
    return parser


# Longer messages (a column's values, say) are cut: the answer to bad input is one readable line.
MAX_ERROR_CHARS = 400


def _input_errors() -> tuple[type[Exception], ...]:
    """What bad input raises: unusable data, a broken manifest, a missing or unreadable file or directory."""
    from synthserve.contract import ManifestError
    from training.errors import DataError

    return (DataError, ManifestError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


def _refuse(error: Exception) -> int:
    """One `error: ...` line on stderr, no traceback; exit status 2."""
    message = " ".join(str(error).split()) or type(error).__name__
    if len(message) > MAX_ERROR_CHARS:
        message = message[: MAX_ERROR_CHARS - 3] + "..."
    print(f"error: {message}", file=sys.stderr)
    return 2


def _train(argv: list[str]) -> int:
    args = _train_parser().parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        print(f"error: --epochs must be >= 1, got {args.epochs}", file=sys.stderr)
        return 2
    if not args.name or "/" in args.name or args.name.startswith("."):
        print(
            f"error: --name {args.name!r}: must be a non-empty name without '/', not starting with '.'", file=sys.stderr
        )
        return 2
    if args.model_store.exists() and not args.model_store.is_dir():
        print(f"error: --model-store {args.model_store}: not a directory", file=sys.stderr)
        return 2
    kinds = {}
    for item in args.column:
        name, sep, kind = item.partition("=")
        if not sep or not name or not kind:
            print(f"--column {item!r}: expected NAME=KIND", file=sys.stderr)
            return 2
        kinds[name] = kind
    import torch
    import torch.distributed as dist

    from training.models import model_class
    from training.options import OptionError, split_options
    from training.parity import ExportError
    from training.pipeline import TrainRequest, train_and_publish

    try:
        options, training = split_options(model_class(args.model).config_class, args.option)
    except OptionError as exc:
        print(f"error: --option {exc}", file=sys.stderr)
        return 2

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("error: --device cuda: CUDA is not available on this machine", file=sys.stderr)
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
        column_kinds=kinds,
        family_config=options,
        train_config=training,
        progress=not args.no_progress,
        onnx_exporter=args.onnx_exporter,
        plots=not args.no_plots,
        accept_weak=args.accept_weak_model,
        reference_rows=not args.no_reference_rows,
    )
    try:
        path = train_and_publish(request)
    except _input_errors() as exc:  # from loading the data up to the evaluation after export
        return _refuse(exc)
    except ExportError as exc:  # the graphs do not reproduce the model: the message says what to do
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)
        return 1
    finally:
        if distributed:
            dist.barrier()
            dist.destroy_process_group()
    if path is not None:
        from synthserve.contract import load_manifest
        from training.gate import summary_lines

        for line in summary_lines(load_manifest(path).metrics):
            print(line)
        print(path)
    return 0


def _evaluate(argv: list[str]) -> int:
    args = _evaluate_parser().parse_args(argv)
    from training.reevaluate import evaluate_published

    try:
        path = evaluate_published(args.model_store, args.name, args.version)
    except _input_errors() as exc:
        return _refuse(exc)
    print(path)
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
