"""The model store as the server sees it: every `<name>/<version>/` that verifies and loads.

A version is loaded only when its manifest parses (unknown `format_version` refused), every file it will
load is listed in `files` with a matching sha256, and the runtime accepts the graphs. A version that fails
is logged, counted in `synthserve_model_load_failures_total` and skipped; the others serve.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from serving import metrics
from serving.config import RuntimeConfig
from serving.errors import ModelNotFound
from serving.runtime import Runtime, create_runtime
from serving.tables import TableEncoder
from synthserve.contract import (
    FileCheckError,
    Manifest,
    ManifestError,
    load_manifest,
    shown,
    verify_files,
    version_directories,
)

__all__ = ["LoadedModel", "ModelLoadError", "Registry", "load_version"]

_log = logging.getLogger(__name__)


class ModelLoadError(Exception):
    """A model version that cannot be served; `reason` is the metric label (checksum, format, load)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class LoadedModel:
    """One servable model version."""

    name: str
    version: int
    directory: Path
    manifest: Manifest
    runtime: Runtime
    manifest_mtime_ns: int = 0  # a rescan reuses this load while the manifest is unchanged

    @functools.cached_property
    def table_encoder(self) -> TableEncoder:
        """Encodes this version's response tables (built once: serving.tables)."""
        return TableEncoder(self.manifest.schema)

    @property
    def latent_dim(self) -> int:
        spec = self.manifest.graphs.get("encode")
        if spec is None:
            return 0
        return int(spec.outputs[0].row_shape[0]) if spec.outputs[0].row_shape else 1


def load_version(directory: Path, config: RuntimeConfig) -> LoadedModel:
    """Verifies and loads one version directory, or raises ModelLoadError naming the reason."""
    try:
        manifest = load_manifest(directory)
    except ManifestError as exc:
        raise ModelLoadError("format", str(exc)) from exc
    if manifest.name != directory.parent.name or manifest.version != int(directory.name):
        raise ModelLoadError(
            "format", f"{directory}: manifest says {manifest.name}/{manifest.version}, directory disagrees"
        )
    needed = [spec.file for spec in manifest.graphs.values()]
    if config.runtime == "torchscript":
        if manifest.torchscript is None:
            raise ModelLoadError("format", f"{directory}: --runtime torchscript but the manifest has no torchscript")
        needed.append(manifest.torchscript)
    try:
        verify_files(directory, manifest.files, needed)
    except FileCheckError as exc:
        raise ModelLoadError(exc.reason, str(exc)) from exc
    try:
        runtime = create_runtime(directory, manifest, config)
    except Exception as exc:  # whatever the runtime raises on a graph it cannot run: this version only
        raise ModelLoadError("load", f"{directory}: {type(exc).__name__}: {exc}") from exc
    mtime_ns = (directory / "manifest.json").stat().st_mtime_ns
    return LoadedModel(manifest.name, manifest.version, directory, manifest, runtime, mtime_ns)


def _model_directories(store: Path) -> list[Path]:
    """The store's model directories (hidden ones, e.g. a staging area, and plain files ignored)."""
    found = []
    for path in sorted(store.iterdir()):
        try:
            if not path.name.startswith(".") and path.is_dir():
                found.append(path)
        except OSError:  # e.g. a name too long to stat: not a model directory
            continue
    return found


class Registry:
    """Loaded model versions by name; immutable once built, so a hot reload can swap in a new one."""

    def __init__(self, models: Mapping[str, Mapping[int, LoadedModel]], failures: Mapping[str, str]) -> None:
        self._models = {name: dict(sorted(versions.items())) for name, versions in sorted(models.items())}
        self.failures = dict(failures)

    @classmethod
    def scan(cls, store: Path, config: RuntimeConfig, previous: Registry | None = None) -> Registry:
        """Loads every `<name>/<positive int>/` under `store`; hidden and non-integer directories are ignored.

        With `previous` (a hot reload), versions whose manifest is unchanged are reused without reloading, and
        failures already reported are not reported again.
        """
        if not store.is_dir():
            raise FileNotFoundError(f"model store {store} is not a directory")
        models: dict[str, dict[int, LoadedModel]] = {}
        failures: dict[str, str] = {}

        def refuse(key: str, model: str, reason: str, message: str) -> None:
            if previous is None or previous.failures.get(key) != message:
                _log.error("model %s refused (%s): %s", key, reason, message)
                metrics.MODEL_LOAD_FAILURES.labels(model, reason).inc()
            failures[key] = message

        for model_dir in _model_directories(store):
            try:
                versions = version_directories(model_dir)
            except OSError as exc:
                refuse(model_dir.name, model_dir.name, "format", f"{model_dir}: cannot be listed ({exc})")
                continue
            for number, version_dir in versions:
                key = f"{model_dir.name}/{number}"
                reused = previous._reusable(model_dir.name, number) if previous else None
                try:
                    loaded = reused or load_version(version_dir, config)
                except ModelLoadError as exc:
                    refuse(key, model_dir.name, exc.reason, str(exc))
                    continue
                except Exception as exc:  # a defect in a check above must cost one version, never the server
                    _log.exception("loading %s failed unexpectedly", key)
                    refuse(key, model_dir.name, "load", f"{version_dir}: {type(exc).__name__}: {exc}")
                    continue
                models.setdefault(loaded.name, {})[loaded.version] = loaded
                if reused is None:
                    capabilities = ", ".join(loaded.manifest.capabilities)
                    _log.info("model %s loaded (%s, %s)", key, loaded.manifest.family, capabilities)
        for name in set(previous.names() if previous else ()) - set(models):
            metrics.MODEL_VERSIONS_LOADED.labels(name).set(0)
        for name, loaded_versions in models.items():
            metrics.MODEL_VERSIONS_LOADED.labels(name).set(len(loaded_versions))
        return cls(models, failures)

    def _reusable(self, name: str, version: int) -> LoadedModel | None:
        loaded = self._models.get(name, {}).get(version)
        if loaded is None:
            return None
        try:
            unchanged = (loaded.directory / "manifest.json").stat().st_mtime_ns == loaded.manifest_mtime_ns
        except OSError:
            return None
        return loaded if unchanged else None

    def names(self) -> list[str]:
        return list(self._models)

    def versions(self, name: str) -> list[int]:
        return list(self._get_versions(name))

    def get(self, name: str, version: int = 0) -> LoadedModel:
        """The given version, or the latest when `version` is 0."""
        versions = self._get_versions(name)
        if version == 0:
            return versions[max(versions)]
        if version not in versions:
            raise ModelNotFound(f"model {shown(name)} has no version {version} (loaded: {sorted(versions)})")
        return versions[version]

    def all(self) -> list[LoadedModel]:
        return [m for versions in self._models.values() for m in versions.values()]

    def _get_versions(self, name: str) -> dict[int, LoadedModel]:
        if not name:
            raise ModelNotFound("model: a model name is required")
        versions = self._models.get(name)
        if not versions:
            raise ModelNotFound(f"model {shown(name)} is not loaded (loaded: {', '.join(self._models) or 'none'})")
        return versions
