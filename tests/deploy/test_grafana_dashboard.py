"""The Grafana dashboard: well-formed for Grafana's JSON model, complete, and on the metric-name contract."""

from __future__ import annotations

import json
import re

import pytest

from .contract import contract_metrics, exposed_series_names, metric_names
from .dashboard import dashboard_metric_names, load_dashboard
from .manifests import find, render

# Panels the deployment issue asks for: title -> metrics it must read.
REQUIRED_PANELS = {
    "Rows/s by model": {"synthserve_rows_generated_total"},
    "Request latency p50 / p99": {"synthserve_request_latency_seconds_bucket"},
    "Queue wait p50 / p99": {"synthserve_queue_wait_seconds_bucket"},
    "Batch rows": {"synthserve_batch_rows_bucket", "synthserve_batch_rows_sum", "synthserve_batch_rows_count"},
    "Errors by code": {"synthserve_requests_total"},
    "GPU utilization": {"synthserve_gpu_utilization_ratio"},
    "GPU memory": {"synthserve_gpu_memory_used_bytes", "synthserve_gpu_memory_total_bytes"},
}


def test_dashboard_is_a_grafana_dashboard_model() -> None:
    dashboard = load_dashboard()
    assert dashboard["uid"] == "synthserve"
    assert isinstance(dashboard["schemaVersion"], int)
    panels = dashboard["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    variables = {variable["name"] for variable in dashboard["templating"]["list"]}
    assert {"datasource", "namespace", "model"} <= variables
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}"
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert ref_ids and len(ref_ids) == len(set(ref_ids)), panel["title"]
        assert panel["fieldConfig"]["defaults"]["unit"], panel["title"]
    # Panels in one row of the grid must not overlap.
    grids = [panel["gridPos"] for panel in panels]
    cells = [(grid["y"], x) for grid in grids for x in range(grid["x"], grid["x"] + grid["w"])]
    assert len(cells) == len(set(cells))


@pytest.mark.parametrize("title", REQUIRED_PANELS)
def test_required_panel_reads_its_metrics(title: str) -> None:
    panel = next((p for p in load_dashboard()["panels"] if p["title"] == title), None)
    assert panel is not None, f"no panel {title!r}"
    names = {name for target in panel["targets"] for name in metric_names(target["expr"])}
    assert REQUIRED_PANELS[title] <= names


SERVER_WIDE = (
    "synthserve_gpu_",
    "synthserve_inflight_bytes",
    "synthserve_idle_calls_cancelled_total",
    "synthserve_server_restarts_total",
)


def test_dashboard_uses_only_contract_metrics() -> None:
    names = dashboard_metric_names()
    assert names <= exposed_series_names(), names - exposed_series_names()
    # Every contract metric is on the dashboard somewhere.
    covered = {re.sub(r"_(bucket|sum|count)$", "", name) for name in names}
    assert set(contract_metrics()) <= names | covered, set(contract_metrics()) - names - covered


def test_panel_queries_filter_by_the_dashboard_variables() -> None:
    for panel in load_dashboard()["panels"]:
        for target in panel.get("targets", []):
            assert 'namespace=~"$namespace"' in target["expr"], target["expr"]
            # NVML series carry a gpu label, not a model; the server-wide guards (memory budget, idle calls,
            # replaced servers) belong to no model either.
            if not any(name in target["expr"] for name in SERVER_WIDE):
                assert 'model=~"$model"' in target["expr"], target["expr"]


def test_kustomize_ships_the_dashboard_to_grafana() -> None:
    config_map = find(render("k8s/monitoring"), "ConfigMap", "synthserve-grafana-dashboard")[0]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert list(config_map["data"]) == ["synthserve-dashboard.json"]
    assert json.loads(config_map["data"]["synthserve-dashboard.json"]) == load_dashboard()
