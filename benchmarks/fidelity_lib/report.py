"""The printed tables (markdown) and the verdicts against the issue's targets, from the run's records.

A record is one (table, form, generator) run: `two_sample_auc`, `outside_share`, `invented_share`,
`fit_seconds` (+ `fit_cpu_seconds`), `call_seconds` (synthserve) and `error` (None when it ran).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from training.models import FAMILIES

__all__ = ["LABELS", "TARGETS", "per_table", "summary", "target_verdicts", "verdict_lines"]

LABELS = {
    **{family: family for family in FAMILIES},
    "gaussian_copula": "SDV GaussianCopula",
    "tvae": "SDV TVAE",
    "ctgan": "SDV CTGAN",
}


def _label(generator: str) -> str:
    """A column's heading: SDV's synthesizers by name, synthserve's families (with their options) as given."""
    return LABELS.get(generator, generator)


# The targets for the best synthserve family.
TARGETS = {
    "mean_auc_original": 0.75,
    "max_auc_original": 0.95,
    "mean_auc_float": 0.65,
    "outside_share": 0.0,
}
Record = dict[str, Any]


def _share(value: float | None) -> str:
    if value is None:
        return "-"
    return "0%" if value == 0 else f"{100 * value:.2f}%"


def _find(records: Sequence[Record], table: str, form: str, generator: str) -> Record | None:
    for r in records:
        if (r["table"], r["form"], r["generator"]) == (table, form, generator):
            return r
    return None


def _cell(record: Record | None) -> str:
    if record is None:
        return "not run"
    if record["error"] is not None:
        return "FAILED"
    text = (
        f"{record['two_sample_auc']:.3f} · {_share(record['outside_share'])} · {_share(record['invented_share'])} · "
        f"{record['fit_seconds']:.1f}"
    )
    return text + (f" ({record['call_seconds']:.0f})" if record["call_seconds"] is not None else "")


def per_table(records: Sequence[Record], form: str, generators: Sequence[str]) -> str:
    """One row per table; a cell is `AUC · outside · invented · fit s` (synthserve: `(whole train call s)`)."""
    tables = list(dict.fromkeys(r["table"] for r in records if r["form"] == form))
    lines = [
        "| table (training rows) | " + " | ".join(_label(g) for g in generators) + " |",
        "|---|" + "---:|" * len(generators),
    ]
    for table in tables:
        rows = next(r["train_rows"] for r in records if r["table"] == table)
        cells = [_cell(_find(records, table, form, g)) for g in generators]
        lines.append(f"| {table} ({rows}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _ran(records: Sequence[Record], form: str, generator: str) -> list[Record]:
    return [r for r in records if r["form"] == form and r["generator"] == generator and r["error"] is None]


def _pooled(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def summary(records: Sequence[Record], forms: Sequence[str], generators: Sequence[str]) -> str:
    """Per form and generator: mean and worst AUC, tables above 0.95, worst outside / invented shares, seconds."""
    lines = [
        "| form | generator | tables | failed | mean AUC | max AUC (table) | AUC > 0.95 | max outside | max invented "
        "| fit s (CPU s) | whole train call s |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for form in forms:
        for generator in generators:
            runs = [r for r in records if r["form"] == form and r["generator"] == generator]
            ok = _ran(records, form, generator)
            if not runs:
                continue
            if ok:
                aucs = [r["two_sample_auc"] for r in ok]
                worst = max(ok, key=lambda r: r["two_sample_auc"])
                calls = [r["call_seconds"] for r in ok if r["call_seconds"] is not None]
                figures = (
                    f"{np.mean(aucs):.3f} | {worst['two_sample_auc']:.3f} ({worst['table']}) | "
                    f"{sum(a > TARGETS['max_auc_original'] for a in aucs)} | "
                    f"{_share(_pooled([r['outside_share'] for r in ok]))} | "
                    f"{_share(_pooled([r['invented_share'] for r in ok]))} | "
                    f"{sum(r['fit_seconds'] for r in ok):.0f} ({sum(r['fit_cpu_seconds'] for r in ok):.0f}) | "
                    f"{f'{sum(calls):.0f}' if calls else '-'}"
                )
            else:
                figures = " | ".join(["-"] * 7)
            lines.append(f"| {form} | {_label(generator)} | {len(runs)} | {len(runs) - len(ok)} | {figures} |")
    return "\n".join(lines)


def _at_most(value: float | None, target: float) -> bool | None:
    """None when nothing was measured (a form or SDV not run): neither a pass nor a failure."""
    return None if value is None else bool(value <= target)


def _family_verdict(records: Sequence[Record], family: str) -> dict[str, Any]:
    failed = [r for r in records if r["generator"] == family and r["error"] is not None]
    original, floats = _ran(records, "original", family), _ran(records, "float", family)
    verdict: dict[str, Any] = {"family": family, "failed_runs": len(failed)}
    if original:
        aucs = [r["two_sample_auc"] for r in original]
        worst = max(original, key=lambda r: r["two_sample_auc"])
        verdict["mean_auc_original"] = float(np.mean(aucs))
        verdict["max_auc_original"] = float(worst["two_sample_auc"])
        verdict["max_auc_original_table"] = worst["table"]
    if floats:
        verdict["mean_auc_float"] = float(np.mean([r["two_sample_auc"] for r in floats]))
    outside = [r["outside_share"] for r in original + floats if r["outside_share"] is not None]
    verdict["max_outside_share"] = max(outside) if outside else None
    pairs = []
    for r in original + floats:
        tvae = _find(records, r["table"], r["form"], "tvae")
        if tvae is not None and tvae["error"] is None:
            pairs.append((r["fit_seconds"], tvae["fit_seconds"], r["fit_cpu_seconds"], tvae["fit_cpu_seconds"]))
    if pairs:
        verdict["fit_at_most_tvae"] = sum(own <= tvae for own, tvae, _, _ in pairs)
        verdict["fit_at_most_tvae_cpu"] = sum(own <= tvae for _, _, own, tvae in pairs)
        verdict["fit_compared"] = len(pairs)
        verdict["fit_seconds_total"] = sum(p[0] for p in pairs)
        verdict["tvae_fit_seconds_total"] = sum(p[1] for p in pairs)
    checks: dict[str, bool | None] = {
        "mean_auc_original": _at_most(verdict.get("mean_auc_original"), TARGETS["mean_auc_original"]),
        "max_auc_original": _at_most(verdict.get("max_auc_original"), TARGETS["max_auc_original"]),
        "mean_auc_float": _at_most(verdict.get("mean_auc_float"), TARGETS["mean_auc_float"]),
        "outside_share": _at_most(verdict["max_outside_share"], TARGETS["outside_share"]),
        "no_failed_runs": not failed,
        "fit_at_most_tvae": verdict["fit_at_most_tvae"] == len(pairs) if pairs else None,
    }
    verdict["checks"] = checks
    verdict["met"] = sum(bool(v) for v in checks.values())
    verdict["checked"] = sum(v is not None for v in checks.values())
    return verdict


def target_verdicts(records: Sequence[Record], families: Sequence[str]) -> dict[str, Any]:
    """Each family's figures and checks against TARGETS; the best family meets most checks, then has the lowest
    mean AUC on tables in original units."""
    verdicts = [_family_verdict(records, f) for f in families]
    best = min(verdicts, key=lambda v: (-v["met"], v.get("mean_auc_original", np.inf))) if verdicts else None
    return {"targets": TARGETS, "families": verdicts, "best": None if best is None else best["family"]}


def _figure(verdict: dict[str, Any], key: str) -> str:
    return f"{verdict[key]:.3f}" if verdict.get(key) is not None else "-"


def _mark(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def verdict_lines(verdicts: dict[str, Any]) -> list[str]:
    """The summary against the targets, one block per family, the best family first."""
    order = sorted(verdicts["families"], key=lambda v: v["family"] != verdicts["best"])
    lines = []
    for v in order:
        checks = v["checks"]
        best = " (best synthserve family)" if v["family"] == verdicts["best"] else ""
        lines.append(f"{v['family']}{best}: {v['met']}/{v['checked']} checks met")
        lines.append(
            f"  original units: mean AUC {_figure(v, 'mean_auc_original')} <= {TARGETS['mean_auc_original']} "
            f"{_mark(checks['mean_auc_original'])}; max AUC {_figure(v, 'max_auc_original')} "
            f"({v.get('max_auc_original_table', '-')}) <= {TARGETS['max_auc_original']} "
            f"{_mark(checks['max_auc_original'])}"
        )
        lines.append(
            f"  float-written: mean AUC {_figure(v, 'mean_auc_float')} <= {TARGETS['mean_auc_float']} "
            f"{_mark(checks['mean_auc_float'])}"
        )
        outside = v["max_outside_share"]
        lines.append(
            f"  values outside the training range: max share {_share(outside)} {_mark(checks['outside_share'])}; "
            f"failed runs {v['failed_runs']} {_mark(checks['no_failed_runs'])}"
        )
        if checks["fit_at_most_tvae"] is not None:
            lines.append(
                f"  training loop s <= TVAE fit s on {v['fit_at_most_tvae']}/{v['fit_compared']} (table, form) "
                f"wall ({v['fit_at_most_tvae_cpu']}/{v['fit_compared']} in CPU s); total {v['fit_seconds_total']:.0f} "
                f"vs TVAE {v['tvae_fit_seconds_total']:.0f} s {_mark(checks['fit_at_most_tvae'])}"
            )
        else:
            lines.append("  training loop s vs TVAE fit s: n/a (SDV not run)")
    return lines
