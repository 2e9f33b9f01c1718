"""The .mar builder: contents, checksum and version checks, and the `synthserve torchserve-archive` command."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest
import yaml

from synthserve.cli import main as synthserve_main
from torchserve_handler.archive import ARCHIVED_MODULES, ArchiveConfig, build_archive, resolve_version
from torchserve_handler.errors import ArtifactError
from torchserve_handler.service import HandlerConfig


def test_archive_is_self_contained(tiny_store: Path, tmp_path: Path) -> None:
    config = ArchiveConfig(tiny_store, "tiny-cond", tmp_path, workers=3, handler=HandlerConfig(max_rows_per_request=77))
    path = build_archive(config)
    assert path == tmp_path / "tiny-cond.mar"
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        assert {"handler.py", "manifest.json", "sample.onnx", "log_prob.onnx", "model-config.yaml"} <= names
        assert set(ARCHIVED_MODULES) <= names
        assert "torchserve_handler/archive.py" not in names  # the builder is no part of the worker
        for name in ("manifest.json", "sample.onnx"):
            assert archive.read(name) == (tiny_store / "tiny-cond" / "1" / name).read_bytes()
        mar_manifest = json.loads(archive.read("MAR-INF/MANIFEST.json"))
        model_config = yaml.safe_load(archive.read("model-config.yaml"))
    assert mar_manifest["model"]["modelName"] == "tiny-cond"
    assert mar_manifest["model"]["modelVersion"] == "1"
    assert mar_manifest["model"]["handler"] == "handler.py"
    assert model_config["minWorkers"] == model_config["maxWorkers"] == 3
    assert model_config["handler"] == {"max_rows_per_request": 77, "intra_op_threads": 1}


def test_refuses_a_store_whose_checksums_differ(tiny_store: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    shutil.copytree(tiny_store / "tiny-uncond", store / "tiny-uncond")
    with (store / "tiny-uncond" / "1" / "sample.onnx").open("ab") as graph:
        graph.write(b"\0")
    with pytest.raises(ArtifactError, match=r"sample\.onnx has sha256 [0-9a-f]{64}, manifest says"):
        build_archive(ArchiveConfig(store, "tiny-uncond", tmp_path / "out"))
    assert not (tmp_path / "out" / "tiny-uncond.mar").exists()


def test_refuses_a_manifest_of_another_model(tiny_store: Path, tmp_path: Path) -> None:
    shutil.copytree(tiny_store / "tiny-uncond", tmp_path / "store" / "renamed")
    with pytest.raises(ArtifactError, match="manifest name 'tiny-uncond' differs from --name 'renamed'"):
        build_archive(ArchiveConfig(tmp_path / "store", "renamed", tmp_path / "out"))


def test_resolve_version(tmp_path: Path) -> None:
    for name in ("1", "2", "10", ".tmp-11", "latest", "0"):
        (tmp_path / "m" / name).mkdir(parents=True)
    assert resolve_version(tmp_path, "m", None) == tmp_path / "m" / "10"
    assert resolve_version(tmp_path, "m", 2) == tmp_path / "m" / "2"
    with pytest.raises(ArtifactError, match=r"no version 3 \(versions: \[1, 2, 10\]\)"):
        resolve_version(tmp_path, "m", 3)
    with pytest.raises(ArtifactError, match="no model versions"):
        resolve_version(tmp_path, "absent", None)


def test_command(tiny_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["torchserve-archive", "--model-store", str(tiny_store), "--name", "tiny-uncond", "-o", str(tmp_path)]
    assert synthserve_main(argv) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "tiny-uncond.mar")
    assert synthserve_main(argv) == 1
    assert "tiny-uncond.mar exists; pass --force to overwrite it" in capsys.readouterr().err
    assert synthserve_main([*argv, "--force", "--version", "1"]) == 0
    with pytest.raises(SystemExit):
        synthserve_main([*argv, "--workers", "0"])
    assert "--workers must be a positive integer, got 0" in capsys.readouterr().err
