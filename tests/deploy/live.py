"""A real `synthserve serve` and a real Prometheus scraping it, both on 127.0.0.1, for the live tests."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from tests.serving.helpers import free_port

from .rules import write_rule_file

__all__ = ["Prometheus", "Server", "corrupted_copy", "running_prometheus", "running_server", "wait_for"]

T = TypeVar("T")
_SERVING = re.compile(r"serving .* on 127\.0\.0\.1:(\d+)")
_METRICS = re.compile(r"metrics on http://127\.0\.0\.1:(\d+)/metrics")


def wait_for(what: str, probe: Callable[[], T | None], timeout_s: float, interval_s: float = 0.25) -> T:
    """Polls `probe` until it returns something other than None (or False)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


def corrupted_copy(version_dir: Path, version: int, destination: Path) -> None:
    """`version_dir` copied as `version` of the same model, with a graph that fails its checksum."""
    shutil.copytree(version_dir, destination)
    manifest = json.loads((destination / "manifest.json").read_text())
    manifest["version"] = version  # the manifest is not in `files`: only the graph's checksum is off
    (destination / "manifest.json").write_text(json.dumps(manifest))
    # Readers verify the graphs they load: corrupt the first one.
    victim = destination / next(iter(manifest["graphs"].values()))["file"]
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))


@dataclass(frozen=True)
class Server:
    target: str
    metrics_port: int
    log: Path


@contextmanager
def running_server(model_store: Path, log: Path, timeout_s: float = 60.0) -> Iterator[Server]:
    """`synthserve serve` on ports the kernel picks (port 0), read back from its log."""
    synthserve = Path(sys.executable).parent / "synthserve"
    command = [str(synthserve), "serve", "--model-store", str(model_store), "--host", "127.0.0.1"]
    command += ["--port", "0", "--metrics-port", "0", "--grace-period-s", "1"]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    try:

        def ports() -> tuple[int, int] | None:
            if process.poll() is not None:
                raise AssertionError(f"synthserve serve exited with {process.returncode}:\n{log.read_text()}")
            text = log.read_text()
            serving, metrics = _SERVING.search(text), _METRICS.search(text)
            return (int(serving.group(1)), int(metrics.group(1))) if serving and metrics else None

        grpc_port, metrics_port = wait_for("synthserve to log its ports", ports, timeout_s)
        yield Server(f"127.0.0.1:{grpc_port}", metrics_port, log)
    finally:
        _stop(process)


@dataclass(frozen=True)
class Prometheus:
    url: str

    def get(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.get("/api/v1/query", query=expr)["result"]
        return result

    def value(self, expr: str) -> float | None:
        """The single value of an instant query, or None when it returns nothing."""
        result = self.query(expr)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None


@contextmanager
def running_prometheus(
    prometheus: str, directory: Path, scrape_port: int, timeout_s: float = 30.0
) -> Iterator[Prometheus]:
    """Prometheus scraping 127.0.0.1:`scrape_port` every second with the shipped rules, as the Operator would
    (job "synthserve", namespace and pod labels on the target)."""
    write_rule_file(directory)
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": ["synthserve.rules.yaml"],
        "scrape_configs": [
            {
                "job_name": "synthserve",
                "static_configs": [
                    {
                        "targets": [f"127.0.0.1:{scrape_port}"],
                        "labels": {"namespace": "live", "pod": "synthserve-live-0"},
                    }
                ],
            }
        ],
    }
    (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()  # Prometheus cannot report a port it picked itself
    command = [
        prometheus,
        f"--config.file={directory / 'prometheus.yml'}",
        f"--storage.tsdb.path={directory / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    log = directory / "prometheus.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, cwd=directory)
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"prometheus exited with {process.returncode}:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
                    return bool(response.status == 200)
            except OSError:
                return False

        wait_for("prometheus to be ready", ready, timeout_s)
        yield Prometheus(url)
    finally:
        _stop(process)
