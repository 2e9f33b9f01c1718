"""Store layout: the latest version directory of each model, ignoring what is not a version."""

from __future__ import annotations

from pathlib import Path

from synthserve.contract import latest_versions


def test_latest_versions_take_the_highest_number_and_skip_models_without_one(tmp_path: Path) -> None:
    for relative in ("b/1", "b/2", "b/10", "b/.staging-11", "a/3", "a/notes", "empty", "c/01"):
        (tmp_path / relative).mkdir(parents=True)
    (tmp_path / "README").write_text("not a model")
    assert latest_versions(tmp_path) == {"a": tmp_path / "a" / "3", "b": tmp_path / "b" / "10"}
