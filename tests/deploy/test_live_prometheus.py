"""A real Prometheus scrapes a real `synthserve serve` of the shipped model store, with the shipped rules.

Proves through Prometheus's HTTP API that the request counter and the batch histogram arrive with the right
values, that every metric the dashboard and the rules read is really exported, that every dashboard query
returns series, and that the rules evaluate without error on real series. The store holds the shipped models
plus a corrupted newer version of one of them, so the load-failure counter is exported too.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import yaml

from .contract import metric_names
from .dashboard import dashboard_metric_names, load_dashboard
from .live import Prometheus, corrupted_copy, running_prometheus, running_server, wait_for
from .rules import rule_groups
from .tools import REPO, require_tool

SHIPPED_STORE = REPO / "model_store"
ROWS_PER_REQUEST = 64
SAMPLE_MODELS = 2  # two Sample requests to each of this many shipped models
SAMPLE_OK = 'sum(synthserve_requests_total{job="synthserve", method="Sample", code="OK"})'
GPU_METRICS = {
    "synthserve_gpu_utilization_ratio",
    "synthserve_gpu_memory_used_bytes",
    "synthserve_gpu_memory_total_bytes",
}


@dataclass(frozen=True)
class Live:
    prometheus: Prometheus
    sampled_models: tuple[str, ...]
    sample_requests: int
    scored_model: str | None
    corrupted_model: str


def _shipped_versions() -> dict[str, Path]:
    """Model name -> its latest version directory in model_store/."""
    latest: dict[str, Path] = {}
    models = sorted(p for p in SHIPPED_STORE.iterdir() if p.is_dir()) if SHIPPED_STORE.is_dir() else []
    for model in models:
        # Readers take positive integer directories only; publishing renames a complete one into place.
        versions = [v for v in model.iterdir() if v.name.isdigit() and int(v.name) > 0]
        versions = [v for v in versions if (v / "manifest.json").is_file()]
        if versions:
            latest[model.name] = max(versions, key=lambda v: int(v.name))
    return latest


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    shipped = _shipped_versions()
    if not shipped:
        pytest.skip("model_store/ holds no model yet (`make models` trains the shipped ones)")
    prometheus_bin = require_tool("prometheus")
    from serving.client import SynthClient  # the serving extra; imported only when there is a store to serve

    # The shipped store, linked, plus a corrupted next version of its first model, which must be refused.
    store = tmp_path_factory.mktemp("store")
    corrupted, corrupted_latest = next(iter(shipped.items()))
    for name, latest in shipped.items():
        if name != corrupted:
            (store / name).symlink_to(latest.parent, target_is_directory=True)
            continue
        for version_dir in (v for v in latest.parent.iterdir() if v.name.isdigit()):
            (store / name).mkdir(exist_ok=True)
            (store / name / version_dir.name).symlink_to(version_dir, target_is_directory=True)
        next_version = int(corrupted_latest.name) + 1
        corrupted_copy(corrupted_latest, next_version, store / name / str(next_version))

    work = tmp_path_factory.mktemp("prometheus")
    with (
        running_server(store, work / "synthserve.log") as server,
        running_prometheus(prometheus_bin, work, server.metrics_port) as prometheus,
        SynthClient(server.target, timeout_s=60) as client,
    ):
        described = client.models()
        samplers = [m.name for m in described if "sample" in m.capabilities][:SAMPLE_MODELS]
        assert samplers, f"no shipped model can sample: {[m.name for m in described]}"
        # A first request per model, scraped before the second, so that each model's counters move between two
        # scrapes: a series first seen at its final value has a rate of 0.
        for seed, model in enumerate(samplers):
            client.sample(model, ROWS_PER_REQUEST, seed=seed)
        wait_for("the first requests in Prometheus", lambda: prometheus.value(SAMPLE_OK) == len(samplers), 30)
        for seed, model in enumerate(samplers, start=len(samplers)):
            client.sample(model, ROWS_PER_REQUEST, seed=seed)
        scorer = next((m.name for m in described if {"sample", "log_prob"} <= set(m.capabilities)), None)
        requests = 2 * len(samplers)
        if scorer is not None:
            client.score(scorer, client.sample(scorer, ROWS_PER_REQUEST, seed=99))
            requests += 1
        # One refused call, so that the error panels have a series too.
        with pytest.raises(grpc.RpcError) as refused:
            client.sample("no-such-model", 1)
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND
        wait_for("every request in Prometheus", lambda: prometheus.value(SAMPLE_OK) == requests, 30)
        wait_for("the refused request", lambda: prometheus.query('synthserve_requests_total{code="NOT_FOUND"}'), 30)
        yield Live(prometheus, tuple(samplers), requests, scorer, corrupted)


def test_request_counter_counts_each_sample_request(live: Live) -> None:
    by_model = {
        series["metric"]["model"]: float(series["value"][1])
        for series in live.prometheus.query('synthserve_requests_total{method="Sample", code="OK"}')
    }
    assert set(live.sampled_models) <= set(by_model)
    assert sum(by_model.values()) == live.sample_requests
    assert live.prometheus.value("sum(synthserve_rows_generated_total)") == live.sample_requests * ROWS_PER_REQUEST


def test_batch_histogram_holds_every_sampled_row(live: Live) -> None:
    rows = live.prometheus.value('sum(synthserve_batch_rows_sum{graph="sample"})')
    batches = live.prometheus.value('sum(synthserve_batch_rows_count{graph="sample"})')
    assert rows == live.sample_requests * ROWS_PER_REQUEST
    assert batches is not None and 1 <= batches <= live.sample_requests
    assert live.prometheus.value('sum(synthserve_batch_rows_bucket{graph="sample", le="+Inf"})') == batches
    if live.scored_model is not None:
        assert live.prometheus.value("sum(synthserve_rows_scored_total)") == ROWS_PER_REQUEST


def test_refused_version_is_counted(live: Live) -> None:
    failures = f'synthserve_model_load_failures_total{{model="{live.corrupted_model}", reason="checksum"}}'
    assert live.prometheus.value(failures) == 1


def _scraped_names(prometheus: Prometheus) -> set[str]:
    names: list[str] = prometheus.get("/api/v1/label/__name__/values")
    return set(names)


def test_every_metric_on_the_dashboard_and_in_the_rules_is_exported(live: Live) -> None:
    rule_metrics = {name for g in rule_groups() for r in g["rules"] for name in metric_names(r["expr"])}
    recorded = {r["record"] for g in rule_groups() for r in g["rules"] if "record" in r}
    wanted = (dashboard_metric_names() | rule_metrics) - recorded - GPU_METRICS
    assert wanted - _scraped_names(live.prometheus) == set()


def test_every_dashboard_panel_query_returns_series(live: Live) -> None:
    """Prometheus's own PromQL engine runs each panel query, Grafana's variables set to "all"."""
    variables = {"$namespace": ".*", "$model": ".*", "$__rate_interval": "1m"}
    queries = {}
    for panel in load_dashboard()["panels"]:
        for target in panel.get("targets", []):
            if "synthserve_gpu_" not in target["expr"]:  # see the GPU test below
                expr = target["expr"]
                for variable, value in variables.items():
                    expr = expr.replace(variable, value)
                queries[f"{panel['title']}: {target['expr']}"] = expr

    def empty() -> list[str]:
        return [name for name, expr in queries.items() if not live.prometheus.query(expr)]

    # rate() needs two scrapes of a series: the last requests' series may have had only one so far.
    try:
        wait_for("every panel query to return series", lambda: not empty(), 10)
    except AssertionError:
        assert empty() == []


def test_adapter_rule_gives_the_autoscaler_queued_rows_per_pod(live: Live) -> None:
    """The Prometheus Adapter's query, templated as the adapter does for one pod, on the live series."""
    adapter = yaml.safe_load((REPO / "k8s" / "monitoring" / "prometheus-adapter-values.yaml").read_text())
    rule = next(r for r in adapter["rules"]["custom"] if r["name"]["as"] == "synthserve_queued_rows")
    query = (
        rule["metricsQuery"]
        .replace("<<.Series>>", "synthserve_queued_rows")
        .replace("<<.LabelMatchers>>", 'namespace="live",pod=~"synthserve-live-0"')
        .replace("<<.GroupBy>>", "pod")
    )
    result = live.prometheus.query(query)
    assert [series["metric"] for series in result] == [{"pod": "synthserve-live-0"}]
    assert float(result[0]["value"][1]) == 0  # every request has been answered: nothing waits


def test_gpu_metrics_are_exported_where_there_is_a_gpu(live: Live) -> None:
    if shutil.which("nvidia-smi") is None:
        pytest.skip("no GPU on this machine: synthserve_gpu_* are exported only when NVML finds a GPU")
    assert _scraped_names(live.prometheus) >= GPU_METRICS


def test_rules_evaluate_on_the_live_series(live: Live) -> None:
    groups = live.prometheus.get("/api/v1/rules")["groups"]
    assert {g["name"] for g in groups} == {g["name"] for g in rule_groups()}
    broken = {r["name"]: r["lastError"] for g in groups for r in g["rules"] if r["health"] != "ok"}
    assert broken == {}

    def rates() -> dict[str, float] | None:
        result = live.prometheus.query('model:synthserve_rows_generated:rate5m{namespace="live"}')
        values = {series["metric"]["model"]: float(series["value"][1]) for series in result}
        return values if values and all(values.get(model, 0) > 0 for model in live.sampled_models) else None

    assert set(live.sampled_models) <= set(wait_for("the throughput recording rule", rates, 15))
    assert live.prometheus.query('ALERTS{alertname=~"SynthserveNoModelLoaded|SynthserveDown"}') == []
