"""Bulk generation: one seeded request of `num_rows` rows, cut into partitions that workers write in parallel.

Partition `i` holds rows [i * partition_rows, (i + 1) * partition_rows) of the request, fetched with one
SampleStream of that range (`first_row` / `stop_row`), and is written to `<out>/part-<i>-of-<n>.parquet`. Rows
depend only on (model version, seed, labels, row index), so the partitions, concatenated in index order, are the
rows of one SampleStream of the whole request, whichever worker wrote each and in whatever order; with
`partition_rows` a multiple of the stream's chunk size the messages are cut at the same rows too, so the values
are bit for bit the same. The version is pinned: a reload between two workers' calls cannot mix models.

A Kubernetes Indexed Job runs one partition per completion index (`synthserve bulk --index` defaults to
`$JOB_COMPLETION_INDEX`); `--all` runs every partition on one machine with the same code. A partition's file is
renamed into place only when complete, so a retried worker finds either nothing or the whole file, and skips it.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from serving.cli_files import table_writer
from serving.client import SynthClient

__all__ = ["REQUEST_FILE", "BulkRequest", "OtherRequestError", "partition_path", "run_partitions", "write_partition"]

REQUEST_FILE = "_request.json"  # the request every partition belongs to, beside the partitions
MAX_PARTITIONS = 99_999  # five digits in the file names, so they sort in index order


@dataclass(frozen=True)
class BulkRequest:
    """One seeded sampling request and how it is cut: everything that determines every partition's rows."""

    model: str
    version: int  # pinned: every partition from the same model version
    num_rows: int
    seed: int
    partition_rows: int
    label: str | None = None
    proportions: tuple[tuple[str, float], ...] | None = None
    chunk_rows: int = 2_048  # rows per stream message; partition_rows is a multiple of it
    temperature: float | None = None
    best_of: int | None = None
    guidance: float | None = None

    def __post_init__(self) -> None:
        if self.version < 1:
            raise ValueError(f"version must be >= 1 (a bulk job pins one model version), got {self.version}")
        if self.num_rows < 1:
            raise ValueError(f"num_rows must be >= 1, got {self.num_rows}")
        if not 0 <= self.seed < 2**64:
            raise ValueError(f"seed must be in [0, 2**64), got {self.seed}")
        if self.chunk_rows < 1 or self.partition_rows < 1 or self.partition_rows % self.chunk_rows:
            raise ValueError(
                f"partition_rows ({self.partition_rows}) must be a positive multiple of chunk_rows ({self.chunk_rows})"
            )
        if self.partitions > MAX_PARTITIONS:
            raise ValueError(
                f"num_rows {self.num_rows} / partition_rows {self.partition_rows} = {self.partitions} partitions, "
                f"more than {MAX_PARTITIONS}: use larger partitions"
            )
        if self.label is not None and self.proportions is not None:
            raise ValueError("label and proportions: give one or the other, not both")

    @property
    def weights(self) -> dict[str, float] | None:
        """The class proportions as the client and `_request.json` take them."""
        return None if self.proportions is None else dict(self.proportions)

    @property
    def partitions(self) -> int:
        return math.ceil(self.num_rows / self.partition_rows)

    def rows(self, index: int) -> tuple[int, int]:
        """Partition `index`'s rows [first, stop) of the request."""
        if not 0 <= index < self.partitions:
            raise ValueError(f"partition index {index} outside [0, {self.partitions}) for this request")
        first = index * self.partition_rows
        return first, min(first + self.partition_rows, self.num_rows)


def partition_path(out: Path, request: BulkRequest, index: int) -> Path:
    return out / f"part-{index:05d}-of-{request.partitions:05d}.parquet"


class OtherRequestError(ValueError):
    """The output directory holds partitions of another request."""


def _write_request(out: Path, request: BulkRequest) -> None:
    """`<out>/_request.json`: what the partitions are rows of (every worker writes the same, atomically).
    OtherRequestError when it already describes another request: its partitions are not this one's."""
    described: dict[str, Any] = {**asdict(request), "proportions": request.weights, "partitions": request.partitions}
    path = out / REQUEST_FILE
    if path.exists():
        try:
            existing = json.loads(path.read_text())
        except (OSError, ValueError):
            existing = None
        if existing != json.loads(json.dumps(described)):
            raise OtherRequestError(
                f"{out} holds partitions of another request ({path} differs from this one): use another directory "
                "or remove it"
            )
        return
    temporary = path.with_name(f".{REQUEST_FILE}.{uuid.uuid4().hex[:12]}.tmp")
    temporary.write_text(json.dumps(described, indent=2, sort_keys=True) + "\n")
    os.replace(temporary, path)


def write_partition(client: SynthClient, request: BulkRequest, index: int, out: Path) -> Path:
    """Partition `index` of `request` as a Parquet file under `out` (skipped when already complete)."""
    first, stop = request.rows(index)
    out.mkdir(parents=True, exist_ok=True)
    _write_request(out, request)
    path = partition_path(out, request, index)
    if path.exists():  # renamed into place only when complete: a retried worker's partition is done
        return path
    with table_writer(path) as writer:
        for frame in client.sample_stream(
            request.model,
            request.num_rows,
            label=request.label,
            proportions=request.weights,
            seed=request.seed,
            version=request.version,
            chunk_rows=request.chunk_rows,
            temperature=request.temperature,
            best_of=request.best_of,
            guidance=request.guidance,
            first_row=first,
            stop_row=stop,
        ):
            writer.write(frame)
    return path


def run_partitions(
    client: SynthClient, request: BulkRequest, indices: Iterable[int], out: Path, workers: int = 1
) -> list[Path]:
    """Writes the partitions `indices` with `workers` concurrent streams (one machine's share of the job)."""
    indices = list(indices)
    for index in indices:
        request.rows(index)  # every index checked before any work
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda i: write_partition(client, request, i, out), indices))
