"""Publishing: the staged directory becomes the next integer version, its files listed but the checkpoint."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from synthserve.contract import Column, Manifest, Schema
from synthserve.contract.manifest import MANIFEST_FILE
from training.checkpoint import CHECKPOINT_FILE
from training.publish import publish


def test_publish_takes_the_next_version_and_leaves_the_checkpoint_unlisted(tmp_path: Path) -> None:
    parent = tmp_path / "m"
    for entry in ("1", "07", "notes"):  # "07" and "notes" are no versions (the contract's rule): 2 comes next
        (parent / entry).mkdir(parents=True)
    staging = parent / ".tmp-staged"
    staging.mkdir()
    (staging / "sample.onnx").write_bytes(b"graph")
    (staging / CHECKPOINT_FILE).write_bytes(b"weights")
    manifest = Manifest(
        name="m",
        version=1,
        family="flow",
        schema=Schema((Column("a", "continuous", "float64"),)),
        graphs={},
        created_at="2026-01-01T00:00:00Z",
        synthserve_version="0",
    )
    version = publish(staging, manifest)
    assert version == parent / "2" and not staging.exists()
    written = json.loads((version / MANIFEST_FILE).read_text())
    assert written["version"] == 2
    assert written["files"] == {"sample.onnx": hashlib.sha256(b"graph").hexdigest()}
