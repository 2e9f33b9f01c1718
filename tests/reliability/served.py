"""A real `synthserve serve` subprocess on 127.0.0.1 (port 0), for what needs a process: signals and RSS."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

__all__ = ["ServeProcess"]

_SERVING = re.compile(r"serving .* on 127\.0\.0\.1:(\d+)")
_METRICS = re.compile(r"metrics on http://127\.0\.0\.1:(\d+)/metrics")


class ServeProcess:
    """Starts `synthserve serve` with `args`; its log lines are collected in `lines` (stderr is drained)."""

    def __init__(self, store: Path, *args: str, startup_s: float = 60.0) -> None:
        command = [sys.executable, "-m", "synthserve.cli", "serve", "--model-store", str(store), "--port", "0", *args]
        if "--metrics-port" not in args:
            command += ["--metrics-port", "-1"]
        self.process = subprocess.Popen(
            command, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
        self.lines: list[str] = []
        self._ready = threading.Event()
        self.port = 0
        self.metrics_port: int | None = None
        threading.Thread(target=self._drain, daemon=True).start()
        if not self._ready.wait(startup_s):
            self.kill()
            raise RuntimeError("synthserve serve did not start:\n" + "".join(self.lines[-30:]))
        self.target = f"127.0.0.1:{self.port}"

    def _drain(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)
            if match := _METRICS.search(line):
                self.metrics_port = int(match.group(1))
            if match := _SERVING.search(line):
                self.port = int(match.group(1))
                self._ready.set()
        self._ready.set()

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout_s: float) -> int:
        return self.process.wait(timeout=timeout_s)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def log(self) -> str:
        time.sleep(0.05)  # let the drain thread catch the last lines
        return "".join(self.lines)

    def __enter__(self) -> ServeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
