"""Kubernetes-facing channel behaviour: round-robin over several server addresses, and connection age limits."""

from __future__ import annotations

import dataclasses
import shutil
import threading
import time
from pathlib import Path

import grpc
import pytest

from serving.client import SynthClient
from tests.serving.conftest import ServerThread, make_config


@pytest.mark.parametrize(("lb_policy", "servers_used"), [("round_robin", 2), (None, 1)])
def test_lb_policy_spreads_calls_over_every_resolved_address(
    store: Path, tmp_path: Path, lb_policy: str | None, servers_used: int
) -> None:
    # Two servers that differ in their latest gauss version, so each answer says which server gave it.
    only_v1 = tmp_path / "store"
    shutil.copytree(store / "gauss" / "1", only_v1 / "gauss" / "1")
    servers = [ServerThread(make_config(store)), ServerThread(make_config(only_v1))]
    target = "ipv4:" + ",".join(f"127.0.0.1:{s.port}" for s in servers)  # what dns:/// yields for a headless Service
    try:
        with SynthClient(target, timeout_s=10, lb_policy=lb_policy) as client:
            # ListModels, not Sample: the latter's schema lookup could land on the other server (see docs).
            seen = {next(m.versions for m in client.models() if m.name == "gauss") for _ in range(12)}
    finally:
        for server in servers:
            server.stop()
    assert len(seen) == servers_used  # pick_first (the default) sticks to one address


def test_max_connection_age_recycles_connections_without_failing_calls(store: Path) -> None:
    running = ServerThread(dataclasses.replace(make_config(store), max_connection_age_s=0.3, grace_period_s=1.0))
    ready = []
    lock = threading.Lock()

    def on_state(state: grpc.ChannelConnectivity) -> None:
        if state == grpc.ChannelConnectivity.READY:
            with lock:
                ready.append(time.monotonic())

    try:
        with SynthClient(running.target, timeout_s=10) as client:
            client._channel.subscribe(on_state, try_to_connect=True)
            started = time.monotonic()
            calls = 0
            while time.monotonic() - started < 2.0:
                assert len(client.sample("gauss", 8, seed=calls)) == 8
                calls += 1
                time.sleep(0.02)
    finally:
        running.stop()
    # The server sent GOAWAY every ~0.3 s (plus jitter); the channel reconnected each time and no call failed.
    assert len(ready) >= 3, ready
