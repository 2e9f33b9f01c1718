"""The rule file inside k8s/monitoring/prometheusrule.yaml, written out for promtool and Prometheus."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .tools import REPO

__all__ = ["MONITORING", "RULE_FILE_NAME", "rule_groups", "write_rule_file"]

MONITORING = REPO / "k8s" / "monitoring"
# The name rules-tests.yaml loads.
RULE_FILE_NAME = "synthserve.rules.yaml"


def rule_groups() -> list[dict[str, Any]]:
    """The PrometheusRule's groups: its spec is a plain Prometheus rule file."""
    manifest = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    groups: list[dict[str, Any]] = manifest["spec"]["groups"]
    return groups


def write_rule_file(directory: Path) -> Path:
    path = directory / RULE_FILE_NAME
    path.write_text(yaml.safe_dump({"groups": rule_groups()}, sort_keys=False))
    return path
