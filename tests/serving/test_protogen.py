"""The committed generated code in serving/proto/ is what protos/ generates today."""

from __future__ import annotations

from pathlib import Path

from serving.protogen import OUTPUT_DIR, generate


def test_committed_generated_code_matches_protos(tmp_path: Path) -> None:
    written = generate(tmp_path)
    assert written
    for path in written:
        committed = OUTPUT_DIR / path.name
        assert committed.read_text() == path.read_text(), f"{committed} is stale: run `python -m serving.protogen`"
