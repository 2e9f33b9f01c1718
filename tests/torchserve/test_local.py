"""LocalTorchServe: a bounded wait that fails with TorchServe's log, and nothing left running afterwards."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from torchserve_handler.local import LocalTorchServe, TorchServeConfig, TorchServeStartError


def test_a_model_that_never_loads_fails_the_start_and_leaves_no_process(tmp_path: Path) -> None:
    store = tmp_path / "mars"
    store.mkdir()
    (store / "broken.mar").write_bytes(b"not a zip archive")
    server = LocalTorchServe(TorchServeConfig(model_store=store, workdir=tmp_path / "run", startup_timeout_s=8))
    with pytest.raises(TorchServeStartError, match=r"TorchServe not ready within 8 s:\n--- stdout.log"):
        server.start()
    assert server.process_group is not None
    with pytest.raises(ProcessLookupError):
        os.killpg(server.process_group, 0)
