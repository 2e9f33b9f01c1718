"""Run a real TorchServe on loopback for tests and benchmarks: free ports, private config and temp dirs.

TorchServe keeps its pid file in the temp directory and its logs in the working directory; both are pointed at
a private directory so that runs never meet each other. The whole process group (Java frontend and Python
workers) is started in a new session and ended together, so nothing outlives the `with` block.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["LocalTorchServe", "TorchServeConfig", "TorchServeStartError", "free_port"]


class TorchServeStartError(RuntimeError):
    """TorchServe did not become ready; the message carries the tail of its log."""


def free_port() -> int:
    # TorchServe cannot report a port it picked itself, so one is chosen here (a small race, loopback only).
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class TorchServeConfig:
    model_store: Path  # holds the .mar files; every archive there is loaded at start
    workdir: Path  # config.properties, logs and TorchServe's temp files
    startup_timeout_s: float = 90.0
    max_response_size_bytes: int = 64 * 1024 * 1024
    netty_threads: int = 0  # 0: TorchServe's default (the number of cores)
    jvm_heap: str = "1g"


def _get_json(url: str, timeout_s: float = 2.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return json.loads(response.read())


def _signal_group(group: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signum)


def _group_gone(group: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


class LocalTorchServe:
    """`with LocalTorchServe(config) as ts:` -> ts.inference_url serves every archive of the model store."""

    def __init__(self, config: TorchServeConfig) -> None:
        self.config = config
        self.inference_port = free_port()
        self.management_port = free_port()
        self.metrics_port = free_port()
        # TorchServe also serves gRPC (7070/7071 by default): own ports, or a second instance fails to start.
        self.grpc_inference_port = free_port()
        self.grpc_management_port = free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self.process_group: int | None = None  # TorchServe's process group, once started

    @property
    def inference_url(self) -> str:
        return f"http://127.0.0.1:{self.inference_port}"

    @property
    def management_url(self) -> str:
        return f"http://127.0.0.1:{self.management_port}"

    @property
    def log_dir(self) -> Path:
        return self.config.workdir / "logs"

    def _write_properties(self) -> Path:
        lines = [
            f"inference_address={self.inference_url}",
            f"management_address={self.management_url}",
            f"metrics_address=http://127.0.0.1:{self.metrics_port}",
            "grpc_inference_address=127.0.0.1",
            f"grpc_inference_port={self.grpc_inference_port}",
            "grpc_management_address=127.0.0.1",
            f"grpc_management_port={self.grpc_management_port}",
            f"model_store={self.config.model_store}",
            "load_models=all",
            "disable_token_authorization=true",
            "install_py_dep_per_model=false",
            f"max_response_size={self.config.max_response_size_bytes}",
            f"max_request_size={self.config.max_response_size_bytes}",
            f"vmargs=-Xmx{self.config.jvm_heap} -XX:+UseG1GC",
        ]
        if self.config.netty_threads:
            lines.append(f"number_of_netty_threads={self.config.netty_threads}")
        path = self.config.workdir / "config.properties"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self) -> None:
        self.config.workdir.mkdir(parents=True, exist_ok=True)
        tmp = self.config.workdir / "tmp"
        tmp.mkdir(exist_ok=True)
        properties = self._write_properties()
        command = [
            str(Path(sys.executable).parent / "torchserve"),
            "--start",
            "--foreground",
            "--ncs",
            "--disable-token-auth",
            "--ts-config",
            str(properties),
            "--model-store",
            str(self.config.model_store),
        ]
        env = {
            **os.environ,
            "TMPDIR": str(tmp),
            "TEMP": str(tmp),
            "LOG_LOCATION": str(self.log_dir),
            "METRICS_LOCATION": str(self.log_dir),
        }
        with (self.config.workdir / "stdout.log").open("wb") as stdout:
            self._process = subprocess.Popen(
                command,
                cwd=self.config.workdir,
                env=env,
                stdout=stdout,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.process_group = self._process.pid
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.config.startup_timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise TorchServeStartError(f"TorchServe exited with {self._process.returncode}:\n{self.log_tail()}")
            try:
                if _get_json(f"{self.inference_url}/ping").get("status") == "Healthy" and self._workers_ready():
                    return
            except (OSError, ValueError):  # not listening yet, or a half-written answer
                pass
            time.sleep(0.25)
        raise TorchServeStartError(f"TorchServe not ready within {self.config.startup_timeout_s} s:\n{self.log_tail()}")

    def _workers_ready(self) -> bool:
        models = _get_json(f"{self.management_url}/models")["models"]
        if not models:
            return False
        for model in models:
            (detail,) = _get_json(f"{self.management_url}/models/{model['modelName']}")
            workers = detail.get("workers", [])
            if len(workers) < detail.get("minWorkers", 1) or any(w.get("status") != "READY" for w in workers):
                return False
        return True

    def log_tail(self, lines: int = 40) -> str:
        parts = []
        for path in (self.config.workdir / "stdout.log", self.log_dir / "model_log.log"):
            if path.is_file():
                parts.append(f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(parts)

    def stop(self, timeout_s: float = 20.0) -> None:
        """Ends TorchServe's process group (launcher, Java frontend, Python workers) and waits until it is gone."""
        process, self._process = self._process, None
        if process is None:
            return
        group = process.pid
        # The frontend and workers may outlive the launcher (or the launcher may have died first): the group is
        # what has to end, not just the process that was started.
        _signal_group(group, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=timeout_s)
        if not _group_gone(group, timeout_s):
            _signal_group(group, signal.SIGKILL)
            process.wait()
            if not _group_gone(group, timeout_s):
                raise RuntimeError(f"TorchServe's process group {group} survived SIGKILL")

    def __enter__(self) -> LocalTorchServe:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
