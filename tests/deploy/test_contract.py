"""The helpers that read the metric contract and pull metric names out of PromQL."""

from __future__ import annotations

import pytest

from .contract import contract_metrics, exposed_series_names, metric_names


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            'sum by (model) (rate(synthserve_rows_generated_total{namespace=~"$namespace"}[$__rate_interval]))',
            {"synthserve_rows_generated_total"},
        ),
        ("histogram_quantile(0.99, sum by (le) (rate(lat_bucket[5m])))", {"lat_bucket"}),
        ("used / on (pod) group_left (gpu) total > 0.9", {"used", "total"}),
        ('model_method:lat:p99_rate5m{method!="SampleStream"} > 2', {"model_method:lat:p99_rate5m"}),
        ('up{job="a"} == 0 unless on (pod) loaded > 0 and other offset 5m', {"up", "loaded", "other"}),
        ("max_over_time(rate(requests[1m])[5m:1m]) * 1e3", {"requests"}),
        ('label_replace(x, "dst", "$1", "src", "(.*)")', {"x"}),
    ],
)
def test_metric_names_of_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_contract_lists_every_documented_metric_with_its_series() -> None:
    metrics = contract_metrics()
    assert metrics["synthserve_requests_total"] == "counter"
    assert metrics["synthserve_batch_rows"] == "histogram"
    assert metrics["synthserve_queued_rows"] == "gauge"
    series = exposed_series_names()
    assert {"synthserve_batch_rows_bucket", "synthserve_batch_rows_sum", "synthserve_batch_rows_count"} <= series
    assert "synthserve_batch_rows" not in series
    assert "synthserve_requests_total" in series
