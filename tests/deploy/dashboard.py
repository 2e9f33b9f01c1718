"""The Grafana dashboard in k8s/monitoring and the metric names its queries use."""

from __future__ import annotations

import json
from typing import Any

from .contract import metric_names
from .tools import REPO

__all__ = ["DASHBOARD", "dashboard_metric_names", "load_dashboard", "queries"]

DASHBOARD = REPO / "k8s" / "monitoring" / "grafana-dashboard.json"


def load_dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def queries(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression: panel targets and template-variable queries."""
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            # label_values(SELECTOR, label): the selector is PromQL.
            query = variable["query"]["query"]
            exprs.append(query[len("label_values(") : query.rindex(",")])
    return exprs


def dashboard_metric_names() -> set[str]:
    return {name for expr in queries(load_dashboard()) for name in metric_names(expr)}
