"""The registry scans the store, verifies checksums and formats, and serves what loads."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from serving.config import RuntimeConfig
from serving.errors import ModelNotFound
from serving.registry import Registry
from tests.serving.helpers import metric


def test_scan_loads_valid_versions_and_refuses_the_others_with_reasons(store: Path) -> None:
    checksum_before = metric("synthserve_model_load_failures_total", {"model": "broken", "reason": "checksum"})
    registry = Registry.scan(store, RuntimeConfig())
    assert registry.names() == ["gauss", "gauss-gan"]
    assert registry.versions("gauss") == [1, 2]
    assert registry.get("gauss").version == 2 and registry.get("gauss", 1).version == 1
    assert "sha256" in registry.failures["broken/1"]
    assert "format_version 2 is not supported" in registry.failures["future/1"]
    assert (
        metric("synthserve_model_load_failures_total", {"model": "broken", "reason": "checksum"}) == checksum_before + 1
    )
    assert metric("synthserve_model_versions_loaded", {"model": "gauss"}) == 2


@pytest.mark.parametrize(
    ("name", "version", "fragment"), [("nope", 0, "not loaded"), ("gauss", 3, "no version 3"), ("", 0, "required")]
)
def test_get_unknown_model_or_version_is_not_found(store: Path, name: str, version: int, fragment: str) -> None:
    with pytest.raises(ModelNotFound, match=fragment):
        Registry.scan(store, RuntimeConfig()).get(name, version)


def test_unlisted_graph_file_is_refused(store: Path, tmp_path: Path) -> None:
    copy = tmp_path / "store"
    shutil.copytree(store / "gauss", copy / "gauss")
    manifest = copy / "gauss" / "1" / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"encode.onnx":', '"other.onnx":'))
    registry = Registry.scan(copy, RuntimeConfig())
    assert registry.versions("gauss") == [2]
    assert "encode.onnx is not listed" in registry.failures["gauss/1"]


def test_missing_store_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a directory"):
        Registry.scan(tmp_path / "absent", RuntimeConfig())
