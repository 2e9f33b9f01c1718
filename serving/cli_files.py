"""The files the CLI reads and writes, checked before any work: files a flag names, input tables, output tables.

A bad one (or any bad argument) is an `InputError`, which `main()` reports as one line naming it, exit status 2,
before a connection is made. Output tables are written as rows arrive, under a temporary name, so a large sample
needs the memory of one row group and a failed command leaves no partial file.
"""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pandas as pd

from synthserve.contract import close_matches

__all__ = [
    "InputError",
    "TableWriter",
    "check_columns",
    "check_file",
    "check_output",
    "read_table",
    "table_writer",
    "write_table",
]

TABLE_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
# Served values are float32: 9 significant digits round-trip them without float64 noise digits.
CSV_FLOAT_FORMAT = "%.9g"
# Streamed chunks are small (the server's default is 2,048 rows); Parquet readers want fewer, larger row groups.
PARQUET_ROW_GROUP_ROWS = 65_536


class InputError(Exception):
    """A bad argument or input file: reported as one line naming it, exit status 2, before any work is done."""


def _table_format(path: Path, flag: str) -> str:
    table_format = TABLE_FORMATS.get(path.suffix.lower())
    if table_format is None:
        raise InputError(f"{flag} {path}: unsupported file type {path.suffix or '(none)'!r} (use .csv or .parquet)")
    return table_format


def check_file(path: Path | None, flag: str) -> None:
    if path is not None and not path.is_file():
        raise InputError(f"{flag} {path}: {'not a file' if path.exists() else 'no such file'}")


def check_output(path: Path | None) -> None:
    if path is None:
        return
    _table_format(path, "--output")
    if path.is_dir():
        raise InputError(f"--output {path}: is a directory")
    if not path.parent.is_dir():
        raise InputError(f"--output {path}: no such directory {path.parent}")


def read_table(path: Path, flag: str = "--input") -> pd.DataFrame:
    table_format = _table_format(path, flag)
    check_file(path, flag)
    try:
        return pd.read_parquet(path) if table_format == "parquet" else pd.read_csv(path)
    except (OSError, ValueError) as exc:  # pandas' parser errors and pyarrow's ArrowInvalid are ValueErrors
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{flag} {path}: cannot read it as {table_format.upper()} ({reason})") from exc


def check_columns(frame: pd.DataFrame, names: list[str], path: Path) -> None:
    """Every column the model reads is in the input; a missing one is named with the input's close matches."""
    missing = [name for name in names if name not in frame.columns]
    if missing:
        others = [column for column in frame.columns if column not in names]
        more = f"; {len(missing) - 1} more missing" if len(missing) > 1 else ""
        raise InputError(f"--input {path}: no column {missing[0]!r}{close_matches(missing[0], others)}{more}")


class TableWriter:
    """Frames, as they come, to CSV (a file or stdout) or Parquet, so memory stays bounded by one row group.

    A file is written under a temporary name beside it and renamed when complete: a command that fails leaves
    no partial file (what went to stdout cannot be taken back)."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._format = "csv" if path is None else TABLE_FORMATS[path.suffix.lower()]
        self._temporary = None if path is None else path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
        self._csv: IO[str] | None = None
        self._parquet: Any = None  # pyarrow.parquet.ParquetWriter, made with the first frame's schema
        self._pending: list[Any] = []  # pyarrow Tables not yet written as a row group
        self._pending_rows = 0
        self._written = False

    def write(self, frame: pd.DataFrame) -> None:
        if self._format == "csv":
            if self._csv is None:
                self._csv = sys.stdout if self._temporary is None else open(self._temporary, "w", newline="")  # noqa: SIM115
            frame.to_csv(self._csv, index=False, header=not self._written, float_format=CSV_FLOAT_FORMAT)
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            schema = None if self._parquet is None else self._parquet.schema
            table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
            if self._parquet is None:
                # Dictionaries pay off for labels and codes, not for the float columns: on row groups of this
                # size, dictionary-encoded floats make the file ~30% larger than plain ones.
                dictionary = [f.name for f in table.schema if not pa.types.is_floating(f.type)]
                self._parquet = pq.ParquetWriter(self._temporary, table.schema, use_dictionary=dictionary)
            self._pending.append(table)
            self._pending_rows += table.num_rows
            if self._pending_rows >= PARQUET_ROW_GROUP_ROWS:
                self._flush()
        self._written = True

    def _flush(self) -> None:
        import pyarrow as pa

        if self._pending:
            self._parquet.write_table(pa.concat_tables(self._pending), row_group_size=max(1, self._pending_rows))
        self._pending, self._pending_rows = [], 0

    def finish(self) -> None:
        if not self._written:
            self.write(pd.DataFrame())
        if self._parquet is not None:
            self._flush()
            self._parquet.close()
        if self._csv is not None and self._csv is not sys.stdout:
            self._csv.close()
        if self._temporary is not None and self._path is not None:
            os.replace(self._temporary, self._path)

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            if self._parquet is not None:
                self._parquet.close()
            if self._csv is not None and self._csv is not sys.stdout:
                self._csv.close()
        if self._temporary is not None:
            self._temporary.unlink(missing_ok=True)


@contextlib.contextmanager
def table_writer(path: Path | None) -> Iterator[TableWriter]:
    """A `TableWriter` that renames its file into place when the block completes and removes it when it fails."""
    writer = TableWriter(path)
    try:
        yield writer
    except BaseException:
        writer.discard()
        raise
    writer.finish()


def write_table(frame: pd.DataFrame, path: Path | None) -> None:
    with table_writer(path) as writer:
        writer.write(frame)
