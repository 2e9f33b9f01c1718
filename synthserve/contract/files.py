"""Files of the store: a model's version directories, and the checksums of the manifest's `files` map."""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["model_versions", "sha256_file"]


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks so large graphs never sit in memory twice."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_versions(model_dir: Path) -> list[int]:
    """The versions under `model_dir`, ascending: readers ignore directories whose name is not a positive integer."""
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit() and int(p.name) > 0)
