"""Hostile model stores: a malformed manifest costs its own version, never the server or another model's reload.

Each case is a copy of the fixture's gauss/1 with one thing broken, the way an operator's typo, a half-copied
directory or a hostile volume would break it. Promise: the store scan refuses exactly that version with a named
reason (logged, counted in `synthserve_model_load_failures_total`), every other model serves, and a live server
keeps loading other models' new versions while the bad one sits in the store.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from serving.config import RuntimeConfig
from serving.proto import synthesizer_pb2 as pb
from serving.proto import synthesizer_pb2_grpc as pb_grpc
from serving.registry import Registry
from synthserve.contract import ManifestError, load_manifest
from tests.reliability.served import ServeProcess


def _edit(change: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    def apply(directory: Path) -> None:
        path = directory / "manifest.json"
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data))

    return apply


def _write(content: bytes) -> Callable[[Path], None]:
    def apply(directory: Path) -> None:
        (directory / "manifest.json").write_bytes(content)

    return apply


def _manifest_is_a_directory(directory: Path) -> None:
    (directory / "manifest.json").unlink()
    (directory / "manifest.json").mkdir()


def _graph_links_out(directory: Path) -> None:
    graph = directory / "sample.onnx"
    outside = directory.parent.parent / "outside.onnx"
    shutil.copy(graph, outside)
    graph.unlink()
    graph.symlink_to(outside)


def _graph_path(path: str) -> Callable[[Path], None]:
    def change(data: dict[str, Any]) -> None:
        digest = data["files"].pop("sample.onnx")
        data["graphs"]["sample"]["file"] = path
        data["files"][path] = digest

    return _edit(change)


def _set(path: str, value: Any) -> Callable[[Path], None]:
    def change(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = data
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return _edit(change)


DEEP = b"[" * 100_000 + b"]" * 100_000

# (case, how the copy of gauss/1 is broken, the reason counted, words the refusal must contain)
CASES: list[tuple[str, Callable[[Path], None], str, str]] = [
    ("not-utf8", _write(b'{"name": "\xff\xfe"}'), "format", "not UTF-8"),
    ("deep-json", _write(DEEP), "format", "nested too deeply"),
    ("huge", _write(b" " * (16 * 1024 * 1024 + 1)), "format", "larger than"),
    ("manifest-dir", _manifest_is_a_directory, "format", "cannot be read"),
    ("priors-text", _set("schema.label.priors", "0.5,0.5"), "format", "schema.label.priors"),
    ("prior-text", _set("schema.label.priors.0", "half"), "format", "schema.label.priors"),
    ("image-shape-text", _set("schema.image_shape", "8x8"), "format", "schema.image_shape"),
    ("capabilities-int", _set("capabilities", 5), "format", "capabilities"),
    ("column-text", _set("schema.columns.0", "x0"), "format", "schema.columns[0]"),
    ("tensor-text", _set("graphs.sample.inputs.0", "noise"), "format", "graphs.sample.inputs[0]"),
    ("shape-bool", _set("graphs.sample.outputs.0.shape", [None, True]), "format", "shape"),
    ("category-object", _set("schema.columns.2.categories", [{"a": 1}, "b"]), "format", "categories[0]"),
    ("metrics-list", _set("metrics", [1, 2]), "format", "metrics"),
    ("digest-short", _edit(lambda data: data["files"].update({"sample.onnx": "abc"})), "format", "sha256"),
    ("path-parent", _graph_path("../../gauss/1/sample.onnx"), "format", "inside the version directory"),
    ("path-absolute", _graph_path("/etc/passwd"), "format", "inside the version directory"),
    ("symlink-out", _graph_links_out, "format", "outside the version directory"),
    ("input-dtype", _set("graphs.sample.inputs.0.dtype", "int64"), "load", "ONNX type"),
    ("input-width", _set("graphs.sample.inputs.0.shape", [None, 7]), "load", "ONNX shape"),
    ("output-name", _set("graphs.sample.outputs.0.name", "nothing"), "load", "not produced"),
]


def _bad_copy(source: Path, store: Path, case: str, breaks: Callable[[Path], None]) -> None:
    directory = store / case / "1"
    shutil.copytree(source, directory)
    _set("name", case)(directory)
    breaks(directory)


@pytest.mark.parametrize(("case", "breaks", "reason", "words"), CASES, ids=[c[0] for c in CASES])
def test_each_malformed_version_is_refused_alone(
    store: Path, tmp_path: Path, case: str, breaks: Callable[[Path], None], reason: str, words: str
) -> None:
    live = tmp_path / "store"
    shutil.copytree(store / "gauss", live / "gauss", ignore=shutil.ignore_patterns(".*"))
    _bad_copy(store / "gauss" / "1", live, case, breaks)
    if reason == "format" and case not in ("symlink-out",):
        with pytest.raises(ManifestError, match=r"manifest\.json"):
            load_manifest(live / case / "1")
    registry = Registry.scan(live, RuntimeConfig())
    assert registry.names() == ["gauss"] and registry.versions("gauss") == [1, 2]
    assert list(registry.failures) == [f"{case}/1"]
    assert words in registry.failures[f"{case}/1"]
    assert len(registry.failures[f"{case}/1"]) < 1000  # the refusal never echoes the whole file


def test_odd_version_names_are_not_versions(store: Path, tmp_path: Path) -> None:
    live = tmp_path / "store"
    for name in ("1", "01", "²", "1.0", "-1", "0"):
        shutil.copytree(store / "gauss" / "1", live / "gauss" / name)
    (live / "gauss" / "3").write_text("a file, not a version directory")
    registry = Registry.scan(live, RuntimeConfig())
    assert registry.versions("gauss") == [1] and registry.failures == {}


def _sample_ok(target: str, model: str) -> bool:
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.SynthesizerStub(channel)
        try:
            stub.Sample(pb.SampleRequest(model=model, num_rows=3, seed=1), timeout=10)
        except grpc.RpcError:
            return False
    return True


def _failures(metrics_port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    prefix = "synthserve_model_load_failures_total{"
    return {
        line[len(prefix) : line.index("}")]: float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith(prefix)
    }


def test_a_live_server_starts_and_reloads_around_every_bad_manifest(store: Path, tmp_path: Path) -> None:
    live = tmp_path / "store"
    shutil.copytree(store / "gauss" / "1", live / "gauss" / "1")
    for case, breaks, _, _ in CASES[:6]:
        _bad_copy(store / "gauss" / "1", live, case, breaks)
    with ServeProcess(live, "--reload-interval-s", "0.2", "--metrics-port", "0") as server:
        assert server.metrics_port is not None
        assert _sample_ok(server.target, "gauss")
        for case, breaks, _, _ in CASES[6:]:  # appear while serving, with a new version of a good model
            _bad_copy(store / "gauss" / "1", live / ".incoming", case, breaks)
            os.rename(live / ".incoming" / case, live / case)
        staging = live / "gauss" / ".publishing"
        shutil.copytree(store / "gauss" / "2", staging)
        staging.rename(live / "gauss" / "2")
        deadline = time.monotonic() + 30
        while "model gauss/2 loaded" not in server.log():
            assert time.monotonic() < deadline, server.log()[-3000:]
            time.sleep(0.1)
        time.sleep(0.5)  # two more rescans: bad versions are reported once, not on every rescan
        failures = _failures(server.metrics_port)
        assert server.process.poll() is None
        assert _sample_ok(server.target, "gauss")
        for case, _, reason, _ in CASES:
            assert failures.get(f'model="{case}",reason="{reason}"') == 1.0, (case, failures)
            assert server.log().count(f"model {case}/1 refused ({reason})") == 1
            assert not _sample_ok(server.target, case)
