"""Fixtures: the closed-form model store and real servers on 127.0.0.1, port 0, each in its own loop thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import grpc
import pytest

from serving.config import BatcherConfig, LimitsConfig, ServerConfig
from serving.proto import synthesizer_pb2_grpc as pb_grpc
from serving.server import SynthServer, create_server
from tests.serving.fixture_store import write_store


class ServerThread:
    """Runs `create_server(config)` on an event loop in a background thread; `port` is the bound port."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.server, self.port = self.call(self._start())
        self.target = f"127.0.0.1:{self.port}"

    async def _start(self) -> tuple[SynthServer, int]:
        server, port = create_server(self.config)
        await server.start()
        return server, port

    def call(self, coroutine):  # type: ignore[no-untyped-def]
        future: Future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return future.result(timeout=60)

    def stop(self, grace_s: float | None = 0.5) -> None:
        if self.loop.is_running():
            self.call(self.server.stop(grace_s))
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_store(tmp_path_factory.mktemp("model_store"))


def make_config(store: Path, **batcher: object) -> ServerConfig:
    limits = LimitsConfig(max_rows_per_request=50_000, max_rows_per_stream=2_000_000, max_message_bytes=512 * 1024)
    return ServerConfig(
        model_store=store,
        port=0,
        metrics_port=None,
        batcher=BatcherConfig(**{"max_batch_rows": 4096, "max_queued_rows": 200_000, **batcher}),  # type: ignore[arg-type]
        limits=limits,
    )


@pytest.fixture(scope="session")
def server(store: Path) -> Iterator[ServerThread]:
    running = ServerThread(make_config(store))
    yield running
    running.stop()


@pytest.fixture()
def stub(server: ServerThread) -> Iterator[pb_grpc.SynthesizerStub]:
    with grpc.insecure_channel(server.target) as channel:
        yield pb_grpc.SynthesizerStub(channel)
