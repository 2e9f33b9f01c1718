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
from synthserve.contract import Manifest, ManifestError, has_class_posterior, load_manifest, sha256_file

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
    def selects_by_posterior(self) -> bool:
        """Whether best-of-k sampling can choose by this model's class posterior (a conditional model whose
        log_prob graph outputs `posterior`)."""
        return self.manifest.schema.label is not None and has_class_posterior(self.manifest.graphs)

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
    for file in needed:
        expected = manifest.files.get(file)
        if expected is None:
            raise ModelLoadError("checksum", f"{directory}: {file} is not listed in the manifest's files")
        path = directory / file
        if not path.is_file():
            raise ModelLoadError("checksum", f"{directory}: {file} is missing")
        actual = sha256_file(path)
        if actual != expected:
            raise ModelLoadError("checksum", f"{directory}: {file} has sha256 {actual}, manifest says {expected}")
    try:
        runtime = create_runtime(directory, manifest, config)
    except Exception as exc:
        raise ModelLoadError("load", f"{directory}: {type(exc).__name__}: {exc}") from exc
    mtime_ns = (directory / "manifest.json").stat().st_mtime_ns
    return LoadedModel(manifest.name, manifest.version, directory, manifest, runtime, mtime_ns)


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
        for model_dir in sorted(p for p in store.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for version_dir in sorted(p for p in model_dir.iterdir() if p.is_dir()):
                if not version_dir.name.isdigit() or int(version_dir.name) < 1:
                    continue
                key = f"{model_dir.name}/{version_dir.name}"
                reused = previous._reusable(model_dir.name, int(version_dir.name)) if previous else None
                try:
                    loaded = reused or load_version(version_dir, config)
                except ModelLoadError as exc:
                    if previous is None or previous.failures.get(key) != str(exc):
                        _log.error("model %s refused (%s): %s", key, exc.reason, exc)
                        metrics.MODEL_LOAD_FAILURES.labels(model_dir.name, exc.reason).inc()
                    failures[key] = str(exc)
                    continue
                models.setdefault(loaded.name, {})[loaded.version] = loaded
                if reused is None:
                    capabilities = ", ".join(loaded.manifest.capabilities)
                    _log.info("model %s loaded (%s, %s)", key, loaded.manifest.family, capabilities)
        for name in set(previous.names() if previous else ()) - set(models):
            metrics.MODEL_VERSIONS_LOADED.labels(name).set(0)
        for name, versions in models.items():
            metrics.MODEL_VERSIONS_LOADED.labels(name).set(len(versions))
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
            raise ModelNotFound(f"model {name!r} has no version {version} (loaded: {sorted(versions)})")
        return versions[version]

    def all(self) -> list[LoadedModel]:
        return [m for versions in self._models.values() for m in versions.values()]

    def _get_versions(self, name: str) -> dict[int, LoadedModel]:
        if not name:
            raise ModelNotFound("model: a model name is required")
        versions = self._models.get(name)
        if not versions:
            raise ModelNotFound(f"model {name!r} is not loaded (loaded: {', '.join(self._models) or 'none'})")
        return versions
