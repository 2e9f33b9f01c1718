"""Server configuration as frozen dataclasses; `serving.cli` builds them from argv, nothing else reads argv/env."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from synthserve.contract import BALANCE_SAMPLING, SamplingOptions

__all__ = ["BatcherConfig", "CallLimits", "LimitsConfig", "RuntimeConfig", "ServerConfig"]

MIB = 1024 * 1024


@dataclass(frozen=True)
class BatcherConfig:
    """Dynamic batching: one queue per (model, version, graph)."""

    # The shipped models run fastest at 1k-8k rows per session run, and ORT's arena grows with the batch
    # (a 65,536-row digits batch holds gigabytes; 2,048 rows keep a 10M-row stream under 100 MB of growth),
    # so batches stay small and large requests are split.
    max_batch_rows: int = 2048
    # Under load a batch waits up to this long for mates (early_dispatch closes it sooner when waiting cannot
    # help). 4 ms measured best for one-row requests from 64 clients on 2 cores (docs/benchmarks.md).
    max_queue_delay_s: float = 0.004
    # Close a batch before the delay when waiting cannot help: at once for a lone caller (requests one at a
    # time, a worker idle), and when arrivals pause (serving.batcher). Off: always wait the full delay.
    early_dispatch: bool = True
    # A lone caller's batch expected (RunCost) to run within this long runs on the event loop thread, without
    # the hop to a worker thread and back (~130 us of an idle one-row Sample here, docs/benchmarks.md). The loop
    # blocks at most this long, and only when nothing else of the batcher is queued or running. 0: never.
    inline_max_s: float = 0.0005
    max_queued_rows: int = 1_000_000
    # A run of a heavy graph stays within about this long (fewer rows than max_batch_rows, fitted from its run
    # times): an importance-weighted VAE density costs ~0.5 ms a row, so 2,048 rows would hold a worker for a
    # second and the runtime's arena at hundreds of MB. Light graphs run max_batch_rows.
    max_run_s: float = 0.05
    # A chunk whose expected wait in the queue (rows ahead of it at the graph's timed cost per row, over the worker
    # slots) exceeds this is refused at once with RESOURCE_EXHAUSTED: admitted calls keep a bounded queue time.
    # 5 s: a closed loop of 16 clients of 10,000-row requests (the serving benchmark's saturation phase) queues
    # ~1 s of work on purpose; a heavy graph's million queued rows (~500 s) is what this refuses.
    max_queue_time_s: float = 5.0
    enabled: bool = True  # off: every request chunk runs alone (benchmark baseline)

    def __post_init__(self) -> None:
        if self.max_batch_rows < 1:
            raise ValueError(f"max_batch_rows must be >= 1, got {self.max_batch_rows}")
        if self.max_queue_delay_s < 0:
            raise ValueError(f"max_queue_delay_s must be >= 0, got {self.max_queue_delay_s}")
        if self.inline_max_s < 0:
            raise ValueError(f"inline_max_s must be >= 0, got {self.inline_max_s}")
        if self.max_queue_time_s <= 0:
            raise ValueError(f"max_queue_time_s must be > 0, got {self.max_queue_time_s}")
        if self.max_run_s <= 0:
            raise ValueError(f"max_run_s must be > 0, got {self.max_run_s}")
        if self.max_queued_rows < self.max_batch_rows:
            raise ValueError(f"max_queued_rows ({self.max_queued_rows}) must be >= max_batch_rows")


@dataclass(frozen=True)
class RuntimeConfig:
    """How graphs execute."""

    runtime: str = "onnx"  # onnx | torchscript
    device: str = "cpu"  # cpu | cuda
    intra_op_threads: int = 1
    inference_threads: int = 2  # worker threads shared by all batchers


@dataclass(frozen=True)
class LimitsConfig:
    """Per-request limits; errors name the field and the limit."""

    max_rows_per_request: int = 1_000_000  # Sample, ScoreDensity, Encode
    max_rows_per_stream: int = 100_000_000  # SampleStream, Balance
    # Requests and unary responses; a legal request's memory (message, parsed copy, rows) stays within a few
    # times this. Larger results stream (SampleStream); SynthClient splits large score/encode tables.
    max_message_bytes: int = 32 * MIB
    default_chunk_rows: int = 2048
    stream_prefetch_chunks: int = 2  # chunks computed ahead of the one being sent
    # Estimated bytes all requests in progress may hold (serving.budget); beyond it new requests are refused at
    # once with RESOURCE_EXHAUSTED. With the 32 MiB message limit one request holds at most ~130 MB. None: no limit.
    max_inflight_bytes: int | None = 256 * MIB
    # Runs one request has queued or running at a time: a large request advances a few runs at a time, so the
    # runs of other requests interleave with its own instead of queuing behind all of them.
    request_window_runs: int = 4
    # Candidate rows one request with feature conditions may draw (synthserve.contract.conditions): past it the
    # request fails with FAILED_PRECONDITION naming the rarest condition. A candidate costs one sampled row.
    max_condition_candidates: int = 1_000_000


@dataclass(frozen=True)
class CallLimits:
    # A unary-request call whose message has not arrived this long after its headers ends DEADLINE_EXCEEDED; it
    # then holds no stream, no memory and no graceful stop.
    request_wait_s: float = 10.0
    # Synthesizer calls whose handlers run at once (health and reflection not counted); beyond it new calls are
    # refused at once with RESOURCE_EXHAUSTED. None: no limit.
    max_inflight_rpcs: int | None = 4096

    def __post_init__(self) -> None:
        if self.request_wait_s <= 0:
            raise ValueError(f"request_wait_s must be > 0, got {self.request_wait_s}")
        if self.max_inflight_rpcs is not None and self.max_inflight_rpcs < 1:
            raise ValueError(f"max_inflight_rpcs must be >= 1, got {self.max_inflight_rpcs}")


@dataclass(frozen=True)
class ServerConfig:
    model_store: Path
    host: str = "127.0.0.1"
    port: int = 50051
    metrics_port: int | None = 9400
    workers: int = 1  # server processes sharing the port (SO_REUSEPORT)
    grace_period_s: float = 10.0
    drain_s: float = 0.0  # on stop: health NOT_SERVING, still serving for this long, then refuse new RPCs
    reload_interval_s: float = 30.0  # rescan the store for new versions (SIGHUP rescans at once); 0: never
    batcher: BatcherConfig = field(default_factory=BatcherConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    calls: CallLimits = field(default_factory=CallLimits)
    # TLS when cert and key are given; mTLS (client certificates required) when a client CA is given too.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None
    auth_tokens: tuple[str, ...] = ()  # non-empty: Synthesizer RPCs need `authorization: Bearer <token>`
    auth_open_probes: bool = True  # health and reflection answer without a token (Kubernetes probes, grpcurl)
    # Connections are closed (GOAWAY, in-flight RPCs finish) after this age, so clients behind a Kubernetes
    # Service re-resolve and spread over new pods; None: connections live until a side closes them.
    max_connection_age_s: float | None = None
    # HTTP/2 streams one connection may hold open; beyond it grpc core refuses new ones (REFUSED_STREAM, the client
    # sees UNAVAILABLE). Bounds what one connection can pin (an idle stream costs ~20 KB until request_wait_s ends
    # it). None: no limit.
    max_concurrent_streams: int | None = 4096
    # The server pings a connection silent this long and closes it when no answer comes within the timeout, so the
    # streams of a vanished client are released.
    keepalive_time_s: float = 60.0
    keepalive_timeout_s: float = 20.0
    # Freed memory goes back to the OS this often (glibc malloc_trim), so RSS falls after a burst. 0: never.
    memory_trim_interval_s: float = 5.0
    # RPCs the whole server runs at once (every method, health included); beyond it grpc answers new calls
    # RESOURCE_EXHAUSTED before a handler runs. None: no limit.
    max_concurrent_rpcs: int | None = None
    # Calls grpc core has received that no handler has picked up yet. Beyond grpc's own default (1,000, with
    # random early drop up to 3,000) core cancels new calls (CANCELLED, indistinguishable from a client's own
    # cancellation) in a burst; with this higher bound the batcher's queue limit answers them RESOURCE_EXHAUSTED.
    max_pending_rpcs: int = 20_000
    # Balance's sampling options for the fields a request leaves out (best_of on models without a class
    # posterior: 1).
    balance_sampling: SamplingOptions = BALANCE_SAMPLING

    def __post_init__(self) -> None:
        for name in ("max_concurrent_streams", "max_concurrent_rpcs"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.max_pending_rpcs < 1:
            raise ValueError(f"max_pending_rpcs must be >= 1, got {self.max_pending_rpcs}")
