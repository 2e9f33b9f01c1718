"""The work of one (dataset, fold): every method's utility, anomaly and fidelity figures as long-format records.

A record is (dataset, fold, method, classifier, metric, value); `classifier` is empty for figures that have
none. A family whose training or graphs fail yields an `error` record instead of that fold's figures of the failed
part (balancing, or anomaly detection), so one bad dataset does not sink a 90-minute run, and the report counts the
failures.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from benchmarks.quality_lib.baselines import ANOMALY_BASELINES, RESAMPLERS
from benchmarks.quality_lib.data import Fold, Standardizer, load_folds
from benchmarks.quality_lib.generator import (
    MAJORITY,
    MINORITY,
    OnnxModel,
    TrainConfig,
    TrainResult,
    train_model,
    write_training_csv,
)
from benchmarks.quality_lib.metrics import anomaly_auroc, c2st_auc, dcr_ratio, utility_scores
from synthserve.contract import SamplingOptions, has_class_posterior

__all__ = ["RECORD_FIELDS", "FoldTask", "RunConfig", "run_fold", "run_tasks", "sampling_method"]

# random_state of the resampling baselines, like every other random_state the protocol fixes.
BASELINE_SEED = 0
# The family's -log p(x) alone, recorded beside the served anomaly score it is mixed into (training/anomaly.py).
DENSITY_ONLY = "{}(log p)"
RECORD_FIELDS = ("dataset", "fold", "method", "classifier", "metric", "value", "note")
Record = dict[str, Any]


@dataclass(frozen=True)
class RunConfig:
    """Everything a worker needs besides the fold: the split and how synthserve models are trained."""

    split: str
    families: tuple[TrainConfig, ...]
    anomaly: bool = True  # also train each density family on majority rows and score the test fold
    # Server-side sampling options (temperature, best-of-k) under which oversampling utility is measured; each
    # is its own method, named by `sampling_method`. Plain sampling (T = 1, k = 1) is the family's name.
    sampling: tuple[SamplingOptions, ...] = (SamplingOptions(),)


@dataclass(frozen=True)
class FoldTask:
    dataset: str
    fold: int
    config: RunConfig


def _record(fold: Fold, method: str, metric: str, value: float, classifier: str = "", note: str = "") -> Record:
    return {
        "dataset": fold.dataset,
        "fold": fold.index,
        "method": method,
        "classifier": classifier,
        "metric": metric,
        "value": value,
        "note": note,
    }


def _utility_records(
    fold: Fold, method: str, x_train: np.ndarray, added: np.ndarray, x_test: np.ndarray
) -> list[Record]:
    x = np.vstack([x_train, added])
    y = np.concatenate([fold.y_train, np.ones(len(added), dtype=np.int64)])
    scores = utility_scores(x, y, x_test, fold.y_test)
    return [_record(fold, method, m, v, classifier=c) for c, per in scores.items() for m, v in per.items()]


def _cost_records(fold: Fold, method: str, prefix: str, trained: TrainResult, metrics: dict[str, Any]) -> list[Record]:
    """What one `synthserve train` call cost, and its split into fitting and export as the manifest reports it."""
    records = [
        _record(fold, method, f"{prefix}_wall_s", trained.wall_s),
        _record(fold, method, f"{prefix}_cpu_s", trained.cpu_s),
    ]
    for key, name in (("training_seconds", "fit_s"), ("export_seconds", "export_s"), ("epochs_run", "epochs")):
        if isinstance(metrics.get(key), int | float):
            records.append(_record(fold, method, f"{prefix}_{name}", float(metrics[key])))
    return records


def sampling_method(family: str, options: SamplingOptions) -> str:
    if options == SamplingOptions():
        return family
    guidance = f",w={options.guidance:g}" if options.guidance != 1.0 else ""
    return f"{family}(T={options.temperature:g},k={options.best_of}{guidance})"


# A failed `synthserve train` (TrainingFailed: a RuntimeError) or ONNX Runtime refusing a graph, among others.
FAMILY_ERRORS = (RuntimeError, ValueError, OSError, subprocess.SubprocessError)


def _family_records(fold: Fold, family: TrainConfig, config: RunConfig, std: Standardizer, work: Path) -> list[Record]:
    """The family's figures on one fold: balancing, fidelity and cost from the conditional model, then anomaly
    detection from a density trained on the majority rows. Each part fails alone, as an `error` record whose note
    says which: a density that fails to train keeps the fold's balancing figures, and the other way round."""

    def failed(part: str, exc: Exception) -> Record:
        return _record(fold, family.method, "error", float("nan"), note=f"{part}: {str(exc)[-500:]}")

    records: list[Record] = []
    has_density = True  # until the conditional model says otherwise
    try:
        balance, has_density = _balance_records(fold, family, config, std, work)
        records += balance
    except FAMILY_ERRORS as exc:
        records.append(failed("balance", exc))
    if config.anomaly and has_density:
        try:
            records += _anomaly_records(fold, family, work)
        except FAMILY_ERRORS as exc:
            records.append(failed("anomaly", exc))
    return records


def _balance_records(
    fold: Fold, family: TrainConfig, config: RunConfig, std: Standardizer, work: Path
) -> tuple[list[Record], bool]:
    """(figures of the class-conditional model, whether it has a log_prob graph)."""
    x_train, x_test = std(fold.x_train), std(fold.x_test)
    csv = work / f"{family.family}-train.csv"
    write_training_csv(csv, fold.x_train, fold.y_train, fold.integer_columns)
    trained = train_model(csv, f"{family.family}-cond", work / "store", family, conditional=True)
    model = OnnxModel(trained.version_dir)
    records = _cost_records(fold, family.method, "train", trained, model.manifest.metrics)
    # Oversampling: new minority rows until the classes are balanced, from sample.onnx (and, for best-of-k,
    # log_prob.onnx) under each sampling option, exactly as the server draws them.
    n_new = fold.n_majority - fold.n_minority
    scorable = has_class_posterior(model.manifest.graphs)
    for options in config.sampling:
        if options.best_of > 1 and not scorable:
            continue  # no posterior to choose by (GAN): plain sampling is measured under the family's name
        if options.graph not in model.manifest.graphs:
            continue  # no guided sampler (every family but diffusion)
        added = std(model.sample(n_new, seed=family.seed + fold.index, label=MINORITY, options=options))
        records += _utility_records(fold, sampling_method(family.method, options), x_train, added, x_test)
    # Fidelity and privacy on a sample with the training fold's class counts (a fresh seed: other noise).
    seed = family.seed + 1000 + fold.index
    synthetic = np.vstack(
        [
            std(model.sample(fold.n_majority, seed=seed, label=MAJORITY)),
            std(model.sample(fold.n_minority, seed=seed + 1, label=MINORITY)),
        ]
    )
    labels = np.concatenate([np.zeros(fold.n_majority), np.ones(fold.n_minority)])
    real = np.column_stack([x_train, fold.y_train])
    records.append(_record(fold, family.method, "c2st_auc", c2st_auc(np.column_stack([synthetic, labels]), real)))
    records.append(_record(fold, family.method, "dcr_ratio", dcr_ratio(synthetic, x_train, x_test)))
    return records, "log_prob" in model.manifest.capabilities


def _anomaly_records(fold: Fold, family: TrainConfig, work: Path) -> list[Record]:
    """A density trained on the majority rows scores the test fold: the served score's AUROC (and -log p's)."""
    normal = fold.y_train == 0
    csv = work / f"{family.family}-majority.csv"
    write_training_csv(csv, fold.x_train[normal], None, fold.integer_columns)
    trained = train_model(csv, f"{family.family}-majority", work / "store", family, conditional=False)
    density = OnnxModel(trained.version_dir)
    if "log_prob" not in density.manifest.capabilities:
        return []
    scores = density.scores(fold.x_test)
    # What ScoreDensity flags by: the anomaly score, or -log p(x) on graphs without one.
    served = -scores.log_density if scores.anomaly_score is None else scores.anomaly_score
    records = _cost_records(fold, family.method, "anomaly_train", trained, density.manifest.metrics)
    records.append(_record(fold, family.method, "anomaly_auroc", anomaly_auroc(fold.y_test, served)))
    if scores.anomaly_score is not None:
        density_only = anomaly_auroc(fold.y_test, -scores.log_density)
        records.append(_record(fold, DENSITY_ONLY.format(family.method), "anomaly_auroc", density_only))
    return records


def run_fold(task: FoldTask) -> list[Record]:
    """All figures of one fold; one thread, so `--jobs` processes use `--jobs` cores."""
    with threadpool_limits(1):
        fold = load_folds(task.dataset, task.config.split)[task.fold]
        std = Standardizer.fit(fold.x_train)
        x_train, x_test = std(fold.x_train), std(fold.x_test)
        records = []
        for name, resample in RESAMPLERS.items():
            start = time.perf_counter()
            added = resample(x_train, fold.y_train, BASELINE_SEED)
            records += _utility_records(fold, name, x_train, added, x_test)
            records.append(_record(fold, name, "fit_s", time.perf_counter() - start))
        normal = x_train[fold.y_train == 0]
        for name, score in ANOMALY_BASELINES.items():
            records.append(_record(fold, name, "anomaly_auroc", anomaly_auroc(fold.y_test, score(normal, x_test))))
        for family in task.config.families:
            with tempfile.TemporaryDirectory(prefix=f"quality-{family.family}-") as work:
                cpu_start = time.process_time()  # this process only: the `synthserve train` children are apart
                records += _family_records(fold, family, task.config, std, Path(work))
                records.append(_record(fold, family.method, "eval_cpu_s", time.process_time() - cpu_start))
        return records


def run_tasks(tasks: Iterable[FoldTask], jobs: int) -> Iterator[tuple[FoldTask, list[Record]]]:
    """Runs tasks on `jobs` processes (inline when 1), yielding each fold's records as it finishes."""
    task_list = list(tasks)
    if jobs <= 1:
        for task in task_list:
            yield task, run_fold(task)
        return
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(run_fold, t): t for t in task_list}
        for future in as_completed(futures):
            yield futures[future], future.result()
