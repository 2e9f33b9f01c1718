"""The quality gate: a trained model that is trivially told from real rows, or that copies its training rows, is
not published.

`training.evaluate` measures (on the exported graphs, rows finished as the server sends them) and records
`judge`'s verdict in the metrics as `quality_gate`; `training.pipeline` refuses the staged version with
`QualityGateError` unless the user overrides (`TrainRequest.accept_weak`, `synthserve train
--accept-weak-model`), in which case the version is published with the refusal reasons recorded. A refusal
costs a whole training run, so the thresholds catch only clearly broken models:

- **trivially detected**: two-sample AUC >= `MAX_C2ST_AUC` (0.99). A classifier tells almost every generated
  row from held-out real rows. A GAN whose averaged generator never left its initial weights scores 0.995 on the
  test table; the weakest shipped model (abalone19-gan) scores 0.97, the others at most 0.94.
- **collapsed**: every column whose held-out values vary within a class generates one value per class. This
  does not depend on the classifier, which sees too few rows to separate anything on held-out parts of a few
  dozen rows.
- **copies**: more than `MAX_COPY_SHARE` (half) of the generated rows are exact copies of a training row (all
  columns and the class, as served), and at least `COPY_MARGIN` more than of the held-out real rows. Tables of a
  few discrete columns repeat rows by nature, and a model is not blamed for what fresh real rows do too; nor
  when its rows equal held-out rows (which it never saw) about as often per distinct row as they equal training
  rows (`UNSEEN_MATCH_RATIO`): the repeats come from a small finite set of rows (car-good is the full grid of
  its six columns: every held-out row is new, yet a faithful model's rows are 55% training rows), not memory.
- **near-copies**: the median distance from a generated row to its closest training row (DCR) is under
  `MIN_DCR_RATIO` (a tenth) of the same median for held-out real rows: most generated rows sit on training rows,
  slightly moved (noise added to memorized rows). Skipped when held-out rows themselves repeat training rows
  (their median is 0), and, for a median of 0 (exact repeats), when the rows reach unseen rows as above.

The DCR 5th percentiles are reported but not gated: a sound model of a table with discrete columns may
reproduce a few training rows, as unseen real rows do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from training.errors import DataError

__all__ = [
    "COPY_MARGIN",
    "MAX_C2ST_AUC",
    "MAX_COPY_SHARE",
    "MIN_DCR_RATIO",
    "UNSEEN_MATCH_RATIO",
    "QualityGateError",
    "judge",
    "summary_lines",
    "verdict",
]

MAX_C2ST_AUC = 0.99
MAX_COPY_SHARE = 0.5
COPY_MARGIN = 0.2
MIN_DCR_RATIO = 0.1
# Memorized rows reach no held-out row; a faithful model of a finite set reaches them at ~1x the per-row rate of
# training rows (car-good: 0.9-1.1x). Half leaves room for the sampling noise of a few hundred rows.
UNSEEN_MATCH_RATIO = 0.5
OVERRIDE_FLAG = "--accept-weak-model"


class QualityGateError(DataError):
    """A trained model refused by the quality gate; the message says why. A `DataError`, so the CLI reports it
    as it reports unusable data: one line, exit status 2, nothing published."""

    def __init__(self, name: str, reasons: Sequence[str]) -> None:
        super().__init__(
            f"model {name!r} not published, the quality gate refused it: {'; '.join(reasons)} "
            f"(pass {OVERRIDE_FLAG} to publish it anyway)"
        )
        self.reasons = tuple(reasons)


def judge(metrics: Mapping[str, Any]) -> tuple[str, ...]:
    """Why the evaluated model must not be published (empty: it passes); `metrics` as `evaluate_version` makes
    them (`privacy` may be None when no training rows were given)."""
    reasons = []
    collapsed = list(metrics.get("collapsed_columns") or ())
    auc = metrics.get("c2st_auc")
    if auc is not None and auc >= MAX_C2ST_AUC:
        detail = f"; one value per class in {', '.join(collapsed)}" if collapsed else ""
        reasons.append(
            f"two-sample AUC {auc:.3f} >= {MAX_C2ST_AUC}: a classifier tells generated rows from held-out real rows "
            f"almost always{detail}"
        )
    varying = int(metrics.get("varying_columns") or 0)
    if varying and len(collapsed) == varying:
        reasons.append(f"collapsed: every column generates one value per class ({', '.join(collapsed)})")
    privacy = metrics.get("privacy")
    if privacy:
        copies, real_copies = privacy["exact_copies_synthetic"], privacy["exact_copies_heldout"]
        generalizes = _reaches_unseen_rows(privacy)
        if copies > MAX_COPY_SHARE and copies >= real_copies + COPY_MARGIN and not generalizes:
            reasons.append(
                f"copies training rows: {copies:.0%} of generated rows are exact copies of a training row "
                f"(held-out real rows: {real_copies:.0%})"
            )
        synthetic_dcr, real_dcr = privacy["dcr_median_synthetic"], privacy["dcr_median_heldout"]
        if real_dcr > 0 and synthetic_dcr < MIN_DCR_RATIO * real_dcr and not (synthetic_dcr == 0 and generalizes):
            reasons.append(
                f"near-copies of training rows: median distance to the closest training row {synthetic_dcr:.3g} "
                f"for generated rows, under {MIN_DCR_RATIO} x the {real_dcr:.3g} of held-out real rows"
            )
    return tuple(reasons)


def _reaches_unseen_rows(privacy: Mapping[str, Any]) -> bool:
    """Generated rows equal held-out rows (which the model never saw) at least UNSEEN_MATCH_RATIO times as often
    per distinct row as they equal training rows: the repeats come from a small finite set of rows (a table of a
    few discrete columns, e.g. car-good's full grid), not from memory."""
    train, heldout = privacy.get("distinct_rows_train"), privacy.get("distinct_rows_heldout")
    matches = privacy.get("exact_matches_heldout_synthetic")
    if not train or not heldout or matches is None:
        return False
    expected = privacy["exact_copies_synthetic"] * heldout / train
    return bool(expected > 0 and matches >= UNSEEN_MATCH_RATIO * expected)


def verdict(reasons: Sequence[str], accept_weak: bool) -> dict[str, Any]:
    """The `quality_gate` record kept in the metrics (report.json, manifest, GetModel)."""
    return {
        "passed": not reasons,
        "reasons": list(reasons),
        "accepted_by_override": bool(reasons) and accept_weak,
        "thresholds": {
            "max_c2st_auc": MAX_C2ST_AUC,
            "max_copy_share": MAX_COPY_SHARE,
            "copy_margin": COPY_MARGIN,
            "min_dcr_ratio": MIN_DCR_RATIO,
        },
    }


def summary_lines(metrics: Mapping[str, Any]) -> list[str]:
    """The evaluation in a few lines for the end of `synthserve train`."""
    lines = [f"two-sample AUC (generated vs held-out real rows; 0.5 = indistinguishable): {metrics['c2st_auc']:.3f}"]
    columns: Mapping[str, Mapping[str, float]] = metrics.get("column_fidelity") or {}
    if columns:
        distances = {name: d.get("ks", d.get("tv", 0.0)) for name, d in columns.items()}
        worst = max(distances, key=lambda name: distances[name])
        means = [
            f"mean {key.upper()} {metrics[f'mean_{key}']:.3f}" for key in ("ks", "tv") if metrics.get(f"mean_{key}")
        ]
        lines.append(
            f"column fidelity: {', '.join(means) or 'exact'}; worst {worst!r} "
            f"({'KS' if 'ks' in columns[worst] else 'TV'} {distances[worst]:.3f})"
        )
    privacy = metrics.get("privacy")
    if privacy:
        lines.append(
            "privacy: distance to the closest training row, median "
            f"{privacy['dcr_median_synthetic']:.3g} generated vs {privacy['dcr_median_heldout']:.3g} held-out real "
            f"(5th percentile {privacy['dcr_p05_synthetic']:.3g} vs {privacy['dcr_p05_heldout']:.3g}); exact copies "
            f"{privacy['exact_copies_synthetic']:.1%} vs {privacy['exact_copies_heldout']:.1%}"
        )
    utility = metrics.get("utility")
    if utility:
        lines.append(
            f"utility: ROC AUC on held-out rows of a classifier trained on generated rows {utility['tstr_auc']:.3f} "
            f"vs trained on real rows {utility['trtr_auc']:.3f}"
        )
    gate = metrics.get("quality_gate")
    if gate:
        if gate["passed"]:
            lines.append("quality gate: passed")
        else:
            lines.append(f"quality gate: REFUSED, published because of {OVERRIDE_FLAG}: {'; '.join(gate['reasons'])}")
    return lines
