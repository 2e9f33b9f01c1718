"""Server lifecycle: `create_server(config) -> (server, port)` and `serve(config)` with graceful stop.

`create_server` loads the store, wires the Synthesizer, the standard health service (overall "" and
`synthserve.v1.Synthesizer`, plus `synthserve.v1.Synthesizer/<model>` per loaded model) and reflection, and
binds (port 0 picks a free port, for tests). `serve` runs until SIGTERM/SIGINT, then: health NOT_SERVING,
new RPCs refused, in-flight RPCs finish within `grace_period_s`. SIGHUP, and every `reload_interval_s`, rescan
the store: new versions start serving, removed ones stop. With `workers > 1` it starts that many
processes that share the port through SO_REUSEPORT, each with its own metrics port (metrics_port + i).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import multiprocessing
import os
import signal
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from serving import metrics
from serving.calls import CallTracker
from serving.config import ServerConfig
from serving.engine import Engine
from serving.interceptors import BearerTokenInterceptor, ErrorAndMetricsInterceptor
from serving.memory import trim_forever
from serving.metrics import MetricsServer
from serving.parsing import RateLimitedWarning
from serving.proto import synthesizer_pb2 as pb
from serving.proto import synthesizer_pb2_grpc as pb_grpc
from serving.registry import Registry
from serving.service import SynthesizerService

__all__ = ["SERVICE_NAME", "SynthServer", "create_server", "health_service_name", "serve"]

_log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Synthesizer"].full_name
STOP_IDLE_GRACE_S = 0.5  # on stop, a call still waiting for its request message gets this long to send it


def health_service_name(model: str) -> str:
    """Per-model health service name."""
    return f"{SERVICE_NAME}/{model}"


class SynthServer:
    """A bound, not yet started server and what it owns (engine, worker threads, health)."""

    def __init__(
        self,
        server: grpc.aio.Server,
        config: ServerConfig,
        engine: Engine,
        executor: ThreadPoolExecutor,
        health_servicer: health_aio.HealthServicer,
        metrics_interceptor: ErrorAndMetricsInterceptor,
        calls: CallTracker,
    ) -> None:
        self.grpc_server = server
        self.config = config
        self.engine = engine
        self.health = health_servicer
        self._executor = executor
        self._metrics_interceptor = metrics_interceptor
        self.calls = calls
        self._stopping = False

    async def start(self) -> None:
        """Starts serving; health reports SERVING (overall and per loaded model) from here on."""
        await self.grpc_server.start()
        serving = health_pb2.HealthCheckResponse.SERVING
        for name in ("", SERVICE_NAME, *(health_service_name(m) for m in self.engine.registry.names())):
            await self.health.set(name, serving)

    async def reload(self) -> Registry:
        """Rescans the store: new versions load (unchanged ones are reused), removed ones stop serving."""
        previous = self.engine.registry
        registry = await asyncio.get_running_loop().run_in_executor(
            None, Registry.scan, self.config.model_store, self.config.runtime, previous
        )
        if self._stopping:
            return previous
        await self.engine.use_registry(registry)
        self._metrics_interceptor.set_known_models(registry.names())
        for name in registry.names():
            await self.health.set(health_service_name(name), health_pb2.HealthCheckResponse.SERVING)
        for name in set(previous.names()) - set(registry.names()):
            await self.health.set(health_service_name(name), health_pb2.HealthCheckResponse.NOT_SERVING)
        return registry

    async def stop(self, grace_s: float | None) -> None:
        """Health NOT_SERVING, refuse new RPCs, let in-flight ones finish within `grace_s`, then release.

        Only Synthesizer calls hold the stop: once none runs (and none accepted in the last STOP_IDLE_GRACE_S
        still waits for its request message), health `Watch` streams and idle calls are cancelled at once
        instead of holding the stop for the whole grace period."""
        self._stopping = True
        await self.health.enter_graceful_shutdown()
        # Keep serving while load balancers see NOT_SERVING and stop routing here; only then refuse new RPCs.
        await asyncio.sleep(self.config.drain_s)
        stopping = asyncio.ensure_future(self.grpc_server.stop(grace_s))
        await asyncio.sleep(0)  # grpc stops accepting before the wait below starts
        if grace_s is not None and grace_s > 0:
            await self.calls.quiet(grace_s, STOP_IDLE_GRACE_S)
            await self.grpc_server.stop(0)
        await stopping
        await self.engine.close()
        self._executor.shutdown(wait=True)

    async def discard(self) -> None:
        """Releases what a server that grpc already shut down still holds (its batchers and worker threads)."""
        self._stopping = True
        await self.engine.close()
        self._executor.shutdown(wait=False)

    async def wait_for_termination(self) -> None:
        await self.grpc_server.wait_for_termination()


def create_server(config: ServerConfig, registry: Registry | None = None) -> tuple[SynthServer, int]:
    """Builds and binds the server (call inside the event loop that will run it); returns it and its port."""
    registry = registry or Registry.scan(config.model_store, config.runtime)
    executor = ThreadPoolExecutor(max_workers=config.runtime.inference_threads, thread_name_prefix="inference")
    engine = Engine(registry, config.batcher, config.limits, executor, slots=config.runtime.inference_threads)
    options = [
        ("grpc.max_send_message_length", config.limits.max_message_bytes),
        ("grpc.max_receive_message_length", config.limits.max_message_bytes),
        ("grpc.so_reuseport", 1 if config.workers > 1 else 0),
        ("grpc.server.max_pending_requests", config.max_pending_rpcs),
        ("grpc.server.max_pending_requests_hard_limit", config.max_pending_rpcs),
    ]
    if config.max_connection_age_s is not None:
        options.append(("grpc.max_connection_age_ms", int(config.max_connection_age_s * 1000)))
        options.append(("grpc.max_connection_age_grace_ms", int(config.grace_period_s * 1000)))
    options.append(("grpc.keepalive_time_ms", int(config.keepalive_time_s * 1000)))
    options.append(("grpc.keepalive_timeout_ms", int(config.keepalive_timeout_s * 1000)))
    if config.max_concurrent_streams is not None:
        options.append(("grpc.max_concurrent_streams", config.max_concurrent_streams))
    # Metrics first, so that refused tokens are counted (UNAUTHENTICATED) like every other outcome.
    calls = CallTracker(config.calls)
    for method in pb.DESCRIPTOR.services_by_name["Synthesizer"].methods_by_name:  # series from 0, for rate()
        metrics.IDLE_CALLS_CANCELLED.labels(method)
    metrics_interceptor = ErrorAndMetricsInterceptor(registry.names(), calls)
    interceptors: list[grpc.aio.ServerInterceptor] = [metrics_interceptor]
    if config.auth_tokens:
        interceptors.append(BearerTokenInterceptor(config.auth_tokens, guard_probes=not config.auth_open_probes))
    server = grpc.aio.server(
        interceptors=interceptors, options=options, maximum_concurrent_rpcs=config.max_concurrent_rpcs
    )
    pb_grpc.add_SynthesizerServicer_to_server(SynthesizerService(engine, config.balance_sampling), server)
    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    address = f"{config.host}:{config.port}"
    if config.tls_cert_file is not None and config.tls_key_file is not None:
        client_ca = config.tls_client_ca_file.read_bytes() if config.tls_client_ca_file is not None else None
        credentials = grpc.ssl_server_credentials(
            [(config.tls_key_file.read_bytes(), config.tls_cert_file.read_bytes())],
            root_certificates=client_ca,
            require_client_auth=client_ca is not None,  # mTLS when a client CA is given
        )
        port = server.add_secure_port(address, credentials)
    elif config.tls_cert_file is not None or config.tls_key_file is not None or config.tls_client_ca_file is not None:
        raise ValueError("TLS needs both tls_cert_file and tls_key_file")
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"could not bind {address}")
    return SynthServer(server, config, engine, executor, health_servicer, metrics_interceptor, calls), port


async def _stop_when_orphaned(parent_pid: int, stop: asyncio.Event) -> None:
    """A worker whose parent died (even by SIGKILL) stops gracefully instead of serving on unsupervised."""
    while not stop.is_set():
        if os.getppid() != parent_pid:
            _log.warning("parent %d is gone: stopping", parent_pid)
            stop.set()
        await asyncio.sleep(1.0)


async def _serve_async(config: ServerConfig, parent_pid: int | None = None) -> None:
    metrics_server = None
    if config.metrics_port is not None:
        metrics_server = MetricsServer(config.metrics_port, config.host)
        _log.info("metrics on http://%s:%d/metrics", config.host, metrics_server.port)
    server, port = create_server(config)
    await server.start()
    _log.info("serving %s on %s:%d", ", ".join(server.engine.registry.names()) or "no models", config.host, port)
    stop = asyncio.Event()
    reload_now = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload_now.set)
    loop.set_exception_handler(_grpc_loop_failures)
    orphan_watch = asyncio.ensure_future(_stop_when_orphaned(parent_pid, stop)) if parent_pid is not None else None
    trim_s = config.memory_trim_interval_s
    trimming = asyncio.ensure_future(trim_forever(trim_s)) if trim_s > 0 else None
    interval_s = config.reload_interval_s if config.reload_interval_s > 0 else None
    terminated = asyncio.ensure_future(server.wait_for_termination())
    while not stop.is_set():
        waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(reload_now.wait())]
        await asyncio.wait([*waiters, terminated], timeout=interval_s, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()
        if terminated.done() and not stop.is_set():
            server = await _replace(server, config, port)
            terminated = asyncio.ensure_future(server.wait_for_termination())
        elif not stop.is_set():
            reload_now.clear()
            try:
                await server.reload()
            except Exception:  # a failed rescan keeps the models already serving
                _log.exception("reloading %s failed; serving the models already loaded", config.model_store)
    # `terminated` is not cancelled: grpc's wait_for_termination would pass the cancellation on to the server's own
    # shutdown future, and the stop below would end in CancelledError. The stop completes it.
    for task in (orphan_watch, trimming):
        if task is not None:
            task.cancel()
    _log.info("stopping: finishing in-flight requests for up to %.1f s", config.grace_period_s)
    await server.stop(config.grace_period_s)
    if metrics_server is not None:
        metrics_server.close()
    _log.info("stopped")


_GRPC_LOOP_FAILURES = RateLimitedWarning(10.0, _log)


def _grpc_loop_failures(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """grpc's dead accept loop (see `_replace`) surfaces as an unretrieved task exception: one rate-limited line
    instead of a traceback per malformed call; everything else goes to asyncio's default handler."""
    exc = context.get("exception")
    if isinstance(exc, UnicodeDecodeError) and "_server_main_loop" in "".join(traceback.format_tb(exc.__traceback__)):
        _GRPC_LOOP_FAILURES.warn(f"grpc's accept loop failed on a malformed call ({exc.reason})")
        return
    loop.default_exception_handler(context)


async def _replace(server: SynthServer, config: ServerConfig, port: int) -> SynthServer:
    """A new server on the same port, for one whose grpc accept loop died under it.

    grpc's asyncio server ends its accept loop on some malformed input it meets before any handler (a `:path`
    that is not UTF-8 raises UnicodeDecodeError inside grpc and shuts the server down) and then serves nothing
    while the process lives on. Calls in flight on it are lost; the registry and models are reused."""
    _log.error("the gRPC server stopped on its own (grpc's accept loop failed): starting a new one on port %d", port)
    metrics.SERVER_RESTARTS.inc()
    await server.discard()
    replacement, _ = create_server(dataclasses.replace(config, port=port), server.engine.registry)
    await replacement.start()
    return replacement


def _serve_worker(config: ServerConfig, parent_pid: int) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
    asyncio.run(_serve_async(config, parent_pid))


def serve(config: ServerConfig) -> None:
    """Runs the server(s) until SIGTERM/SIGINT."""
    if config.workers <= 1:
        asyncio.run(_serve_async(config))
        return
    if config.port == 0:
        raise ValueError("--workers > 1 needs a fixed --port (the processes share it)")
    context = multiprocessing.get_context("spawn")
    processes = []
    for index in range(config.workers):
        metrics_port = None if config.metrics_port is None else config.metrics_port + index
        worker_config = dataclasses.replace(config, metrics_port=metrics_port)
        process = context.Process(target=_serve_worker, args=(worker_config, os.getpid()), name=f"synthserve-{index}")
        process.start()
        processes.append(process)

    def forward(signum: int, _frame: object) -> None:
        # Workers stop gracefully on SIGTERM (sent for SIGINT too) and rescan the store on SIGHUP.
        for process in processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGHUP if signum == signal.SIGHUP else signal.SIGTERM)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    for process in processes:
        process.join()
