"""Files of the store: a model's version directories, and the checksums of the manifest's `files` map."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

__all__ = [
    "FileCheckError",
    "latest_versions",
    "model_versions",
    "sha256_file",
    "verify_files",
    "version_directories",
    "version_number",
]

_VERSION = re.compile(r"[1-9][0-9]{0,17}")  # ASCII digits, no leading zero: "7" and "07" never both mean 7


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks so large graphs never sit in memory twice."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class FileCheckError(ValueError):
    """A file a reader was about to load that does not verify; `reason` is "checksum" (unlisted, missing, another
    sha256) or "format" (a path out of the version directory)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def verify_files(directory: Path, listed: Mapping[str, str], names: Iterable[str]) -> None:
    """Checks each of `names` before anything loads it: listed in the manifest's `files` (`listed`), inside
    `directory` once symlinks are resolved, present, and of the listed sha256. Raises FileCheckError."""
    root = directory.resolve()
    for name in names:
        expected = listed.get(name)
        if expected is None:
            raise FileCheckError("checksum", f"{directory}: {name} is not listed in the manifest's files")
        path = directory / name
        if not path.resolve().is_relative_to(root):
            raise FileCheckError("format", f"{directory}: {name} resolves outside the version directory")
        if not path.is_file():
            raise FileCheckError("checksum", f"{directory}: {name} is missing")
        actual = sha256_file(path)
        if actual != expected:
            raise FileCheckError("checksum", f"{directory}: {name} has sha256 {actual}, manifest says {expected}")


def version_number(name: str) -> int | None:
    """The version a directory name stands for (a positive integer written plainly), else None."""
    return int(name) if _VERSION.fullmatch(name) else None


def version_directories(model_dir: Path) -> list[tuple[int, Path]]:
    """(version, directory) under `model_dir`, ascending; readers ignore every other entry."""
    if not model_dir.is_dir():
        return []
    found = []
    for path in model_dir.iterdir():
        version = version_number(path.name)
        if version is not None and path.is_dir():
            found.append((version, path))
    return sorted(found)


def model_versions(model_dir: Path) -> list[int]:
    """The versions under `model_dir`, ascending."""
    return [version for version, _ in version_directories(model_dir)]


def latest_versions(store: Path) -> dict[str, Path]:
    """Each model of a store by name, in name order, with its latest version directory; models without a version
    are left out."""
    latest = {}
    for model_dir in sorted(p for p in store.iterdir() if p.is_dir()):
        versions = version_directories(model_dir)
        if versions:
            latest[model_dir.name] = versions[-1][1]
    return latest
