"""The metric-name contract of docs/metrics.md and the metric names a PromQL expression uses."""

from __future__ import annotations

import re
from functools import cache

from .tools import REPO

__all__ = ["contract_metrics", "exposed_series_names", "metric_names"]

_TABLE_ROW = re.compile(r"^\|\s*`(synthserve_[a-z0-9_]+)`\s*\|\s*(counter|gauge|histogram)\s*\|")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_BRACES = re.compile(r"\{[^{}]*\}")
_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_OFFSET = re.compile(r"\boffset\s+-?(?:\d+(?:ms|[smhdwy]))+")
_NUMBER = re.compile(r"(?<![A-Za-z0-9_:])\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_KEYWORDS = frozenset({"and", "or", "unless", "bool", "inf", "nan", "Inf", "NaN"})


@cache
def contract_metrics() -> dict[str, str]:
    """Metric name -> type (counter, gauge, histogram), read from the table in docs/metrics.md."""
    metrics: dict[str, str] = {}
    for line in (REPO / "docs" / "metrics.md").read_text().splitlines():
        match = _TABLE_ROW.match(line)
        if match:
            metrics[match.group(1)] = match.group(2)
    if not metrics:
        raise AssertionError("docs/metrics.md has no metric table")
    return metrics


def exposed_series_names() -> frozenset[str]:
    """Names of the series the contract's metrics put on /metrics (a histogram's _bucket, _sum and _count)."""
    names: set[str] = set()
    for name, kind in contract_metrics().items():
        names.update((f"{name}_bucket", f"{name}_sum", f"{name}_count") if kind == "histogram" else (name,))
    return frozenset(names)


def metric_names(expr: str) -> set[str]:
    """Metric names selected by a PromQL expression (Grafana's $variables allowed in matchers and ranges)."""
    text = _STRING.sub('""', expr)
    while True:  # innermost first: label matchers, ranges and grouping clauses may nest in subqueries
        reduced = _GROUPING.sub(" ", _BRACKETS.sub(" ", _BRACES.sub(" ", text)))
        if reduced == text:
            break
        text = reduced
    text = _NUMBER.sub(" ", _OFFSET.sub(" ", text))
    names: set[str] = set()
    for match in _IDENTIFIER.finditer(text):
        rest = text[match.end() :].lstrip()
        if rest.startswith("(") or match.group() in _KEYWORDS:
            continue  # a function or aggregation, or an operator keyword
        names.add(match.group())
    return names
