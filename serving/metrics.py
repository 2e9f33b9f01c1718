"""Module-level Prometheus objects; names and labels are the contract in docs/metrics.md."""

from __future__ import annotations

import logging
import threading
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server

__all__ = [
    "BATCH_EXECUTION_SECONDS",
    "BATCH_ROWS",
    "GPU_MEMORY_TOTAL_BYTES",
    "GPU_MEMORY_USED_BYTES",
    "GPU_UTILIZATION_RATIO",
    "MODEL_LOAD_FAILURES",
    "MODEL_VERSIONS_LOADED",
    "QUEUED_ROWS",
    "QUEUE_WAIT_SECONDS",
    "REQUESTS",
    "REQUEST_LATENCY_SECONDS",
    "ROWS_COMPUTED",
    "ROWS_GENERATED",
    "ROWS_SCORED",
    "MetricsServer",
    "child",
]

_log = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384, 65536, 262144, 1048576)

REQUESTS = Counter("synthserve_requests", "Finished RPCs by gRPC status code name", ["model", "method", "code"])
REQUEST_LATENCY_SECONDS = Histogram(
    "synthserve_request_latency_seconds", "RPC latency, arrival to last message", ["model", "method"],
    buckets=_LATENCY_BUCKETS,
)  # fmt: skip
QUEUE_WAIT_SECONDS = Histogram(
    "synthserve_queue_wait_seconds", "Time a request chunk waited in the batcher's queue", ["model", "graph"],
    buckets=_LATENCY_BUCKETS,
)  # fmt: skip
BATCH_ROWS = Histogram("synthserve_batch_rows", "Rows per executed batch", ["model", "graph"], buckets=_ROW_BUCKETS)
BATCH_EXECUTION_SECONDS = Histogram(
    "synthserve_batch_execution_seconds", "Session run time per batch", ["model", "graph"], buckets=_LATENCY_BUCKETS
)
QUEUED_ROWS = Gauge("synthserve_queued_rows", "Rows waiting in the batcher's queue", ["model", "graph"])
ROWS_COMPUTED = Counter("synthserve_rows_computed", "Rows that went through a session run", ["model", "graph"])
ROWS_GENERATED = Counter("synthserve_rows_generated", "Rows returned by Sample, SampleStream and Balance", ["model"])
ROWS_SCORED = Counter("synthserve_rows_scored", "Rows returned by ScoreDensity and Encode", ["model"])
MODEL_VERSIONS_LOADED = Gauge("synthserve_model_versions_loaded", "Versions currently loaded", ["model"])
MODEL_LOAD_FAILURES = Counter(
    "synthserve_model_load_failures", "Versions refused (checksum, format, load error)", ["model", "reason"]
)
SERVER_RESTARTS = Counter(
    "synthserve_server_restarts", "gRPC servers replaced in-process after grpc's accept loop stopped on its own"
)
INFLIGHT_BYTES = Gauge(
    "synthserve_inflight_bytes", "Estimated bytes held by requests in progress (the memory budget's use)"
)
IDLE_CALLS_CANCELLED = Counter(
    "synthserve_idle_calls_cancelled", "Calls cancelled: their request message did not arrive in time", ["method"]
)
_children: dict[tuple[int, tuple[str, ...]], Any] = {}


def child(metric: Any, *labels: str) -> Any:
    """`metric.labels(*labels)`, cached: `labels()` costs more than the update itself, on every request.

    Callers bound the label values (model names the server knows), so the cache stays small."""
    key = (id(metric), labels)
    found = _children.get(key)
    if found is None:
        found = _children[key] = metric.labels(*labels)
    return found


# Registered only when NVML finds a GPU, so a CPU-only server does not export them at all.
GPU_UTILIZATION_RATIO = Gauge("synthserve_gpu_utilization_ratio", "NVML GPU utilization, 0..1", ["gpu"], registry=None)
GPU_MEMORY_USED_BYTES = Gauge("synthserve_gpu_memory_used_bytes", "NVML memory used", ["gpu"], registry=None)
GPU_MEMORY_TOTAL_BYTES = Gauge("synthserve_gpu_memory_total_bytes", "NVML memory total", ["gpu"], registry=None)
_GPU_GAUGES = (GPU_UTILIZATION_RATIO, GPU_MEMORY_USED_BYTES, GPU_MEMORY_TOTAL_BYTES)
_gpu_registered = False


def _gpu_collector(interval_s: float, stop: threading.Event, nvml: Any) -> None:
    handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
    while not stop.wait(interval_s):
        for index, handle in enumerate(handles):
            gpu = str(index)
            GPU_UTILIZATION_RATIO.labels(gpu).set(nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            GPU_MEMORY_USED_BYTES.labels(gpu).set(memory.used)
            GPU_MEMORY_TOTAL_BYTES.labels(gpu).set(memory.total)


def _register_gpu_gauges() -> None:
    global _gpu_registered
    if not _gpu_registered:
        for gauge in _GPU_GAUGES:
            REGISTRY.register(gauge)
        _gpu_registered = True


class MetricsServer:
    """The /metrics HTTP endpoint and, with a GPU, the NVML poller; `close` stops both."""

    def __init__(self, port: int, host: str = "127.0.0.1", gpu_interval_s: float = 5.0) -> None:
        self._http, _thread = start_http_server(port, addr=host)
        self.port = int(self._http.server_port)
        self._stop = threading.Event()
        try:
            import pynvml as nvml  # nvidia-ml-py, only in the `gpu` extra

            nvml.nvmlInit()
            if nvml.nvmlDeviceGetCount() == 0:
                raise RuntimeError("no GPU")
        except Exception as exc:
            _log.info("GPU metrics off (%s: %s)", type(exc).__name__, exc)
        else:
            _register_gpu_gauges()
            threading.Thread(target=_gpu_collector, args=(gpu_interval_s, self._stop, nvml), daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        self._http.shutdown()
        self._http.server_close()
