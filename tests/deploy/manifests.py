"""Renders the kustomizations under k8s/ with `kubectl kustomize`, as `kubectl apply -k` would."""

from __future__ import annotations

import copy
import subprocess
from functools import cache
from typing import Any

import yaml

from .tools import REPO, require_tool

__all__ = ["KUSTOMIZATIONS", "Manifest", "find", "render"]

Manifest = dict[str, Any]

# Every kustomization a user applies (the overlays, the jobs) or builds on (base, monitoring).
KUSTOMIZATIONS = (
    "k8s/base",
    "k8s/monitoring",
    "k8s/overlays/cpu",
    "k8s/overlays/gpu",
    "k8s/training",
    "k8s/training-multinode",
    "k8s/bulk",
)


@cache
def _render(kustomization: str, kubectl: str) -> tuple[Manifest, ...]:
    result = subprocess.run(
        [kubectl, "kustomize", str(REPO / kustomization)], capture_output=True, text=True, timeout=60
    )
    if result.returncode != 0:
        raise AssertionError(f"kubectl kustomize {kustomization} failed:\n{result.stderr}")
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def render(kustomization: str) -> list[Manifest]:
    """The manifests of one kustomization (a deep copy: the cached render is shared between tests)."""
    return copy.deepcopy(list(_render(kustomization, require_tool("kubectl"))))


def find(manifests: list[Manifest], kind: str, name: str | None = None) -> list[Manifest]:
    """Manifests of `kind` (and name prefix: ConfigMaps carry kustomize's hash suffix)."""
    return [
        doc for doc in manifests if doc["kind"] == kind and (name is None or doc["metadata"]["name"].startswith(name))
    ]
