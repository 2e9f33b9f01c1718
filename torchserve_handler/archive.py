"""`synthserve torchserve-archive`: one model-store version -> `NAME.mar` for TorchServe.

The archive is self-contained: the version's ONNX graphs and manifest.json (checksums verified on the
copies that go in), the handler package and `synthserve.contract`'s modules (TorchServe puts the model
directory first on the worker's PYTHONPATH, so these copies are the ones imported), and a model-config.yaml
with the worker count and the handler's limits. The worker needs numpy and onnxruntime, nothing of synthserve.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

import synthserve
import synthserve.contract
import torchserve_handler
from synthserve.contract import ManifestError, load_manifest, model_versions
from synthserve.contract.manifest import MANIFEST_FILE
from torchserve_handler.errors import ArtifactError
from torchserve_handler.model import verify_graph_files
from torchserve_handler.service import HandlerConfig

__all__ = ["ARCHIVED_MODULES", "ArchiveConfig", "build_archive", "main", "resolve_version"]

# Python modules the worker imports, relative to the archive root. handler.py is the entry point and goes
# to the root on its own; the torchserve_handler package ships without it and without this builder.
ARCHIVED_MODULES = (
    "torchserve_handler/__init__.py",
    "torchserve_handler/codec.py",
    "torchserve_handler/errors.py",
    "torchserve_handler/model.py",
    "torchserve_handler/service.py",
    "synthserve/__init__.py",
    *sorted(f"synthserve/contract/{p.name}" for p in Path(synthserve.contract.__file__).parent.glob("*.py")),
)
_SOURCE_ROOTS = {
    "torchserve_handler": Path(torchserve_handler.__file__).parent.parent,
    "synthserve": Path(synthserve.__file__).parent.parent,
}
MODEL_CONFIG_FILE = "model-config.yaml"


@dataclass(frozen=True)
class ArchiveConfig:
    model_store: Path
    name: str
    output_dir: Path
    version: int | None = None  # None: the highest version in the store
    workers: int = 2
    handler: HandlerConfig = field(default_factory=HandlerConfig)
    response_timeout_s: int = 120
    force: bool = False  # overwrite an existing NAME.mar


def resolve_version(model_store: Path, name: str, version: int | None) -> Path:
    """The version directory to archive; readers ignore directories whose name is not a positive integer."""
    model_dir = model_store / name
    versions = model_versions(model_dir)
    if not versions:
        raise ArtifactError(f"{model_dir}: no model versions (expected positive integer directories)")
    if version is None:
        return model_dir / str(versions[-1])
    if version not in versions:
        raise ArtifactError(f"{model_dir}: no version {version} (versions: {versions})")
    return model_dir / str(version)


def _model_config(config: ArchiveConfig) -> dict[str, object]:
    return {
        "minWorkers": config.workers,
        "maxWorkers": config.workers,
        "batchSize": 1,
        "responseTimeout": config.response_timeout_s,
        "handler": {
            "max_rows_per_request": config.handler.max_rows_per_request,
            "intra_op_threads": config.handler.intra_op_threads,
        },
    }


def build_archive(config: ArchiveConfig) -> Path:
    """Writes `<output_dir>/<name>.mar` and returns its path."""
    version_dir = resolve_version(config.model_store, config.name, config.version)
    try:
        manifest = load_manifest(version_dir)
    except ManifestError as exc:
        raise ArtifactError(str(exc)) from exc
    if manifest.name != config.name:
        raise ArtifactError(f"{version_dir}: manifest name {manifest.name!r} differs from --name {config.name!r}")
    target = config.output_dir / f"{config.name}.mar"
    if target.exists() and not config.force:
        raise ArtifactError(f"{target} exists; pass --force to overwrite it")
    config.output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="synthserve-mar-") as tmp:
        stage = Path(tmp) / "stage"
        stage.mkdir()
        shutil.copy2(version_dir / MANIFEST_FILE, stage / MANIFEST_FILE)
        for graph in manifest.capabilities:
            name = manifest.graphs[graph].file
            if not (version_dir / name).is_file():
                raise ArtifactError(f"{version_dir / name}: graph file of graphs.{graph} is missing")
            shutil.copy2(version_dir / name, stage / name)
        # Verified on the copies, so what is archived is what was checked.
        verify_graph_files(stage, manifest)
        for module in ARCHIVED_MODULES:
            destination = stage / module
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(_SOURCE_ROOTS[module.split("/")[0]] / module, destination)
        model_config = Path(tmp) / MODEL_CONFIG_FILE
        model_config.write_text(yaml.safe_dump(_model_config(config), sort_keys=False))
        command = [
            sys.executable,
            "-m",
            "model_archiver.model_packaging",
            "--model-name",
            config.name,
            "--version",
            str(manifest.version),
            "--handler",
            str(Path(torchserve_handler.__file__).parent / "handler.py"),
            "--extra-files",
            str(stage),
            "--config-file",
            str(model_config),
            "--export-path",
            str(config.output_dir),
            "--force",
        ]
        # The archiver stages files in $TMPDIR/<model name>; a private TMPDIR keeps parallel builds apart.
        workdir = Path(tmp) / "archiver"
        workdir.mkdir()
        result = subprocess.run(
            command, env={**os.environ, "TMPDIR": str(workdir)}, capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise ArtifactError(f"torch-model-archiver failed ({result.returncode}): {result.stderr.strip()}")
    return target


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="synthserve torchserve-archive",
        description="Build a TorchServe .mar (ONNX Runtime handler, synthserve seed semantics) from a model store.",
    )
    parser.add_argument("--model-store", required=True, type=Path, help="model store directory")
    parser.add_argument("--name", required=True, help="model name (a directory of the model store)")
    parser.add_argument("--version", type=int, default=None, help="model version (default: the highest)")
    parser.add_argument("-o", "--output-dir", required=True, type=Path, help="where NAME.mar is written")
    parser.add_argument("--workers", type=int, default=2, help="TorchServe workers for the model (default 2)")
    parser.add_argument(
        "--max-rows-per-request",
        type=int,
        default=HandlerConfig.max_rows_per_request,
        help="largest n or rows per request (raise TorchServe's max_response_size with it)",
    )
    parser.add_argument("--intra-op-threads", type=int, default=1, help="ONNX Runtime threads per worker")
    parser.add_argument("--force", action="store_true", help="overwrite an existing NAME.mar")
    args = parser.parse_args(argv[1:])
    for flag, value in (("--version", args.version), ("--workers", args.workers)):
        if value is not None and value < 1:
            parser.error(f"{flag} must be a positive integer, got {value}")
    try:
        handler = HandlerConfig.from_mapping(
            {"max_rows_per_request": args.max_rows_per_request, "intra_op_threads": args.intra_op_threads}
        )
    except ValueError as exc:
        parser.error(str(exc))
    config = ArchiveConfig(
        model_store=args.model_store,
        name=args.name,
        output_dir=args.output_dir,
        version=args.version,
        workers=args.workers,
        handler=handler,
        force=args.force,
    )
    try:
        path = build_archive(config)
    except ArtifactError as exc:
        print(f"synthserve torchserve-archive: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0
