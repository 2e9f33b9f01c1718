"""From long-format records to the issue's outputs: per-dataset CSV, markdown tables, the G-mean plot.

Averaging follows the protocol: over folds, then over the four classifiers, then over datasets. Comparisons
against a reference (SMOTE for utility, kNN distance for anomalies) are per dataset, on the datasets both
methods have figures for: wins/ties/losses (a tie is a difference below `TIE_TOLERANCE`) and a two-sided
Wilcoxon signed-rank p-value.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy.stats import wilcoxon

from training.models import FAMILIES

__all__ = [
    "ANOMALY_REFERENCE",
    "TIE_TOLERANCE",
    "UTILITY_REFERENCE",
    "per_dataset",
    "plot_gmean_difference",
    "summary_tables",
    "write_outputs",
]

TIE_TOLERANCE = 1e-3
UTILITY_REFERENCE = "smote"
ANOMALY_REFERENCE = "knn"
UTILITY_COLUMNS = ("auroc", "gmean", "f1")
FAMILY_COLUMNS = (
    "c2st_auc",
    "dcr_ratio",
    "train_cpu_s",
    "train_wall_s",
    "train_fit_s",
    "train_export_s",
    "train_epochs",
    "anomaly_train_cpu_s",
    "anomaly_train_fit_s",
    "anomaly_train_epochs",
    "eval_cpu_s",
)
METHOD_ORDER = ("none", "ros", "smote", "iforest", "knn", *FAMILIES)


def _method_key(method: str) -> tuple[int, str]:
    """Baselines, then each family followed by its sampling variants (`flow(T=0.8,k=3)` after `flow`)."""
    family = method.split("(")[0]
    return (METHOD_ORDER.index(family) if family in METHOD_ORDER else len(METHOD_ORDER), method)


def per_dataset(records: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, method): means over folds (utility: then over classifiers), failures counted."""
    figures = records[records["metric"] != "error"].copy()
    # Older records stored an undefined DCR ratio as inf; it is undefined, not infinitely private.
    figures.loc[~np.isfinite(figures["value"]) & (figures["metric"] == "dcr_ratio"), "value"] = np.nan
    by_classifier = figures.groupby(["dataset", "method", "metric", "classifier"], dropna=False)["value"].mean()
    wide = by_classifier.groupby(level=["dataset", "method", "metric"]).mean().unstack("metric")
    errors = records[records["metric"] == "error"].groupby(["dataset", "method"]).size().rename("failed_folds")
    table = wide.join(errors, how="outer").reset_index()
    table["failed_folds"] = table["failed_folds"].fillna(0).astype(int)
    columns = ["dataset", "method"] + [
        c for c in (*UTILITY_COLUMNS, "anomaly_auroc", *FAMILY_COLUMNS, "fit_s", "failed_folds") if c in table.columns
    ]
    table = table[columns]
    return table.sort_values(["dataset", "method"], key=lambda s: s.map(_method_key) if s.name == "method" else s)


def _compare(values: pd.DataFrame, method: str, reference: str, metric: str) -> tuple[str, str]:
    """('W/T/L', Wilcoxon p) of `method` against `reference` on `metric`, paired by dataset."""
    if method == reference or reference not in values.columns or method not in values.columns:
        return "", ""
    pair = values[[method, reference]].dropna()
    diff = (pair[method] - pair[reference]).to_numpy()
    wins, losses = int((diff > TIE_TOLERANCE).sum()), int((diff < -TIE_TOLERANCE).sum())
    wtl = f"{wins}/{len(diff) - wins - losses}/{losses}"
    if len(diff) == 0 or np.allclose(diff, 0.0):
        return wtl, "1"
    return wtl, f"{wilcoxon(diff).pvalue:.3g}"


def _pivot(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    return table.pivot(index="dataset", columns="method", values=metric) if metric in table else pd.DataFrame()


def summary_tables(table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The markdown tables: utility (with W/T/L and p against SMOTE), anomaly, fidelity and cost."""
    tables = {}
    utility_methods = sorted(table.dropna(subset=["gmean"])["method"].unique(), key=_method_key)
    rows = []
    pivots = {m: _pivot(table, m) for m in UTILITY_COLUMNS}
    for method in utility_methods:
        row: dict[str, object] = {"method": method, "datasets": int(pivots["gmean"][method].notna().sum())}
        for metric in UTILITY_COLUMNS:
            row[metric] = pivots[metric][method].mean()
        for metric in UTILITY_COLUMNS:
            wtl, p = _compare(pivots[metric], method, UTILITY_REFERENCE, metric)
            row[f"{metric} W/T/L vs SMOTE"] = wtl
            row[f"{metric} p"] = p
        rows.append(row)
    tables["utility"] = pd.DataFrame(rows)
    if "anomaly_auroc" in table:
        anomaly = _pivot(table, "anomaly_auroc").dropna(axis=1, how="all")
        rows = []
        for method in sorted(anomaly.columns, key=_method_key):
            wtl, p = _compare(anomaly, method, ANOMALY_REFERENCE, "anomaly_auroc")
            rows.append(
                {
                    "method": method,
                    "datasets": int(anomaly[method].notna().sum()),
                    "anomaly AUROC": anomaly[method].mean(),
                    "W/T/L vs kNN": wtl,
                    "p": p,
                }
            )
        tables["anomaly"] = pd.DataFrame(rows)
    present = [c for c in (*FAMILY_COLUMNS, "failed_folds") if c in table]
    # A family's own rows: `flow` or `flow[coupling=spline]`, not its sampling options (`flow(T=1,k=5)`).
    trained = [m for m in table["method"].unique() if m.split("[")[0] in FAMILIES and "(" not in m]
    families = table[table["method"].isin(trained)]
    if len(families):
        grouped = families.groupby("method")[present].mean()
        grouped["failed_folds"] = families.groupby("method")["failed_folds"].sum()
        tables["fidelity"] = grouped.reset_index()
    return tables


def _markdown(frame: pd.DataFrame) -> str:
    def cell(v: object) -> str:
        if isinstance(v, float):
            return "" if np.isnan(v) else f"{v:.4f}"
        return str(v)

    header = "| " + " | ".join(frame.columns) + " |\n|" + "---|" * len(frame.columns) + "\n"
    return header + "".join("| " + " | ".join(cell(v) for v in row) + " |\n" for row in frame.itertuples(index=False))


def plot_gmean_difference(table: pd.DataFrame, path: Path) -> None:
    """Per-dataset G-mean minus SMOTE's, one panel per method, datasets sorted by the difference."""
    gmean = _pivot(table, "gmean").dropna(axis=1, how="all")
    methods = [m for m in sorted(gmean.columns, key=_method_key) if m != UTILITY_REFERENCE]
    if UTILITY_REFERENCE not in gmean.columns or not methods:
        raise ValueError("the G-mean plot needs SMOTE and at least one other oversampling method")
    fig, axes = plt.subplots(len(methods), 1, figsize=(10, 2.6 * len(methods)), squeeze=False)
    for ax, method in zip(axes[:, 0], methods):
        diff = (gmean[method] - gmean[UTILITY_REFERENCE]).dropna().sort_values()
        ax.bar(range(len(diff)), diff.to_numpy(), color=np.where(diff.to_numpy() >= 0, "tab:green", "tab:red"))
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_ylabel("G-mean - SMOTE")
        ax.set_title(f"{method}: mean {diff.mean():+.4f} over {len(diff)} datasets")
        ax.set_xticks([])
    axes[-1, 0].set_xlabel("datasets, sorted by difference")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_outputs(records: pd.DataFrame, out: Path, header: str) -> dict[str, pd.DataFrame]:
    """records.csv, per_dataset.csv, results.md and gmean_vs_smote.png under `out`; returns the summary tables."""
    out.mkdir(parents=True, exist_ok=True)
    records.to_csv(out / "records.csv", index=False)
    table = per_dataset(records)
    table.to_csv(out / "per_dataset.csv", index=False)
    tables = summary_tables(table)
    text = header + "\n"
    for name, frame in tables.items():
        text += f"\n## {name}\n\n" + _markdown(frame)
    (out / "results.md").write_text(text)
    plot_gmean_difference(table, out / "gmean_vs_smote.png")
    return tables
