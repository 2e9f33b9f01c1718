"""Shared test helpers: decode responses and compute the closed-form rows of the fixture models."""

from __future__ import annotations

import socket

import numpy as np

from serving.proto import synthesizer_pb2 as pb
from synthserve.contract import draw_noise
from tests.serving.fixture_store import CATEGORIES, MEANS, SCALE

__all__ = ["columns_of", "expected_rows", "free_port", "labels_of", "metric", "rows_of", "table_of"]

_WIRE: dict[int, str] = {
    pb.VALUE_TYPE_FLOAT32: "<f4",
    pb.VALUE_TYPE_FLOAT64: "<f8",
    pb.VALUE_TYPE_INT32: "<i4",
    pb.VALUE_TYPE_INT64: "<i8",
}


def columns_of(table: pb.Table) -> dict[str, np.ndarray]:
    return {c.name: np.frombuffer(c.values, dtype=_WIRE[c.value_type]) for c in table.columns}


def rows_of(table: pb.Table) -> np.ndarray:
    """[n, 3] float64 in schema order."""
    columns = columns_of(table)
    return np.stack([columns["x0"], columns["x1"], columns["cat"]], axis=1).astype(np.float64)


def labels_of(table: pb.Table) -> np.ndarray:
    return np.frombuffer(table.labels, dtype="<i4")


def expected_rows(seed: int, labels: np.ndarray, version: int = 1, start_row: int = 0) -> np.ndarray:
    """The fixture's sample graph in closed form, from the contract's noise rule."""
    n = len(labels)
    z = draw_noise(seed, 0, start_row, n, (2,), "normal").astype(np.float64)
    u = draw_noise(seed, 1, start_row, n, (1,), "uniform").astype(np.float64)
    cont = MEANS[version].astype(np.float64)[labels] + SCALE * z
    return np.concatenate([cont, np.floor(len(CATEGORIES) * u)], axis=1)


def table_of(rows: np.ndarray, labels: np.ndarray | None = None, value_type: int = pb.VALUE_TYPE_FLOAT64) -> pb.Table:
    """Rows [n, 3] -> Table with x0, x1 (given type) and cat (INT64 codes)."""
    dtype = _WIRE[value_type]
    table = pb.Table(num_rows=len(rows))
    table.columns.add(name="x0", value_type=value_type, values=rows[:, 0].astype(dtype).tobytes())
    table.columns.add(name="x1", value_type=value_type, values=rows[:, 1].astype(dtype).tobytes())
    table.columns.add(name="cat", value_type=pb.VALUE_TYPE_INT64, values=rows[:, 2].astype("<i8").tobytes())
    if labels is not None:
        table.labels = labels.astype("<i4").tobytes()
    return table


def metric(name: str, labels: dict[str, str]) -> float:
    """A sample of the process-wide Prometheus registry (0 when the series does not exist yet)."""
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


def free_port() -> int:
    """A loopback port free right now, for servers that cannot report the port they bound themselves."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
