"""Alert and recording rules: `promtool check rules`, `promtool test rules`, and the metric-name contract."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from .contract import exposed_series_names, metric_names
from .rules import MONITORING, rule_groups, write_rule_file
from .tools import require_tool

# The alerts the deployment issue asks for, by what they watch.
REQUIRED_ALERTS = {
    "error ratio": "SynthserveHighErrorRatio",
    "p99 latency": "SynthserveHighLatencyP99",
    "queue saturation": "SynthserveQueueSaturated",
    "no model loaded": "SynthserveNoModelLoaded",
    "GPU memory": "SynthserveGpuMemoryHigh",
}


def _rules() -> list[dict[str, str]]:
    return [rule for group in rule_groups() for rule in group["rules"]]


def _promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_tool("promtool"), *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_promtool_check_rules(tmp_path: Path) -> None:
    result = _promtool("check", "rules", str(write_rule_file(tmp_path)), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout


def test_promtool_unit_tests(tmp_path: Path) -> None:
    write_rule_file(tmp_path)
    shutil.copy(MONITORING / "rules-tests.yaml", tmp_path / "rules-tests.yaml")
    result = _promtool("test", "rules", "rules-tests.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_catch_a_wrong_threshold(tmp_path: Path) -> None:
    """The unit tests constrain the rules: a laxer error-ratio threshold fails them."""
    rules_file = write_rule_file(tmp_path)
    rules_file.write_text(rules_file.read_text().replace("ratio_rate5m > 0.05", "ratio_rate5m > 0.2"))
    shutil.copy(MONITORING / "rules-tests.yaml", tmp_path / "rules-tests.yaml")
    result = _promtool("test", "rules", "rules-tests.yaml", cwd=tmp_path)
    assert result.returncode != 0
    assert "alertname: SynthserveHighErrorRatio" in result.stdout + result.stderr


def test_every_alert_is_unit_tested_firing_and_silent() -> None:
    alerts = {rule["alert"] for rule in _rules() if "alert" in rule}
    assert set(REQUIRED_ALERTS.values()) <= alerts
    tests = yaml.safe_load((MONITORING / "rules-tests.yaml").read_text())["tests"]
    cases = [case for test in tests for case in test.get("alert_rule_test", [])]
    fired = {case["alertname"] for case in cases if case["exp_alerts"]}
    assert fired == alerts, alerts - fired
    # exp_alerts must equal the firing alerts, so an input series that no expected alert matches is one the
    # alert was shown to leave alone: every firing case needs such a healthy series beside the unhealthy ones.
    for test in tests:
        series = [dict(re.findall(r'(\w+)="([^"]*)"', s["series"])) for s in test["input_series"]]
        for case in test.get("alert_rule_test", []):
            expected = [alert["exp_labels"] for alert in case["exp_alerts"]]
            healthy = [s for s in series if not any(_matches(s, labels) for labels in expected)]
            assert healthy, (test["name"], case["alertname"])


def _matches(series: dict[str, str], alert: dict[str, str]) -> bool:
    """Whether an alert could come from the series: they agree on every label both carry."""
    return all(series[key] == str(value) for key, value in alert.items() if key in series)


@pytest.mark.parametrize("rule", _rules(), ids=lambda rule: rule.get("alert") or rule["record"])
def test_rules_use_only_contract_metrics(rule: dict[str, str]) -> None:
    recorded = {r["record"] for r in _rules() if "record" in r}
    names = metric_names(rule["expr"])
    assert names
    assert names <= exposed_series_names() | recorded | {"up"}, names - exposed_series_names() - recorded


@pytest.mark.parametrize("rule", [r for r in _rules() if "alert" in r], ids=lambda rule: rule["alert"])
def test_alerts_carry_severity_and_text(rule: dict[str, object]) -> None:
    labels = rule["labels"]
    annotations = rule["annotations"]
    assert isinstance(labels, dict) and labels["severity"] in {"warning", "critical"}
    assert isinstance(annotations, dict) and annotations["summary"] and annotations["description"]
