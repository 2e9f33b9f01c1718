"""Publishing into the model store: a staged directory becomes the next integer version in one rename.

Readers (the server, `synthserve evaluate`) only ever see complete versions: everything is written into a
hidden staging directory beside the versions first, and the rename is atomic.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from synthserve.contract import Manifest, model_versions, sha256_file
from synthserve.contract.manifest import MANIFEST_FILE
from training.checkpoint import CHECKPOINT_FILE

__all__ = ["publish"]


def _listed_files(directory: Path) -> dict[str, str]:
    """The manifest's `files`: every file of the version but the manifest itself and training's own checkpoint."""
    return {
        p.name: sha256_file(p)
        for p in sorted(directory.iterdir())
        if p.is_file() and p.name not in (MANIFEST_FILE, CHECKPOINT_FILE)
    }


def publish(staging: Path, manifest: Manifest) -> Path:
    """Rename the staging directory to the next free integer version (retrying if another writer won)."""
    parent = staging.parent
    while True:
        version = max(model_versions(parent), default=0) + 1
        final = dataclasses.replace(manifest, version=version, files=_listed_files(staging))
        (staging / MANIFEST_FILE).write_text(final.to_json())
        try:
            os.rename(staging, parent / str(version))
        except OSError:
            if (parent / str(version)).exists():
                continue
            raise
        return parent / str(version)
