"""`synthserve serve|models|sample|balance|score|encode`: argv is parsed here and nowhere else in serving."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import grpc
import pandas as pd
from tqdm import tqdm

from serving.auth import load_tokens
from serving.client import SynthClient
from serving.config import BatcherConfig, CallLimits, LimitsConfig, RuntimeConfig, ServerConfig
from serving.tls import ClientTls
from synthserve.contract import BALANCE_SAMPLING, SamplingOptions, close_matches

__all__ = ["TOKENS_ENV", "TOKEN_ENV", "build_parser", "main"]

# Secrets come from the environment, never argv (which `ps` shows to every user).
TOKENS_ENV = "SYNTHSERVE_AUTH_TOKENS"  # serve: comma-separated accepted bearer tokens
TOKEN_ENV = "SYNTHSERVE_TOKEN"  # client commands: the bearer token to send


def _add_target(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", default="localhost:50051", help="server HOST:PORT")
    parser.add_argument("--timeout-s", type=float, default=None)
    parser.add_argument("--tls-ca", type=Path, default=None, help="PEM CA that signed the server (TLS)")
    parser.add_argument("--tls-cert", type=Path, default=None, help="PEM client certificate (mTLS)")
    parser.add_argument("--tls-key", type=Path, default=None, help="PEM client private key (mTLS)")
    parser.add_argument("--tls-server-name", default=None, help="name the server certificate must carry")


def _add_output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", type=Path, default=None, help=".csv or .parquet (default: CSV on stdout)")


def _add_sampling(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--temperature", type=float, default=None, help="scale of the normal noise, (0, 4]")
    parser.add_argument("--best-of", type=int, default=None, help="candidates per row, chosen by the posterior")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="synthserve")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve a model store over gRPC")
    serve.add_argument("--model-store", type=Path, required=True)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=50051)
    serve.add_argument("--metrics-port", type=int, default=9400, help="-1: no metrics endpoint")
    serve.add_argument("--workers", type=int, default=1, help="server processes sharing the port (SO_REUSEPORT)")
    serve.add_argument("--max-batch-rows", type=int, default=BatcherConfig.max_batch_rows)
    serve.add_argument("--max-queue-delay-ms", type=float, default=BatcherConfig.max_queue_delay_s * 1000)
    serve.add_argument("--max-queued-rows", type=int, default=BatcherConfig.max_queued_rows)
    serve.add_argument(
        "--max-queue-time-ms",
        type=float,
        default=BatcherConfig.max_queue_time_s * 1000,
        help="refuse (RESOURCE_EXHAUSTED) a request expected to wait longer in a batcher's queue",
    )
    serve.add_argument(
        "--max-run-ms", type=float, default=BatcherConfig.max_run_s * 1000, help="a heavy graph's runs last about this"
    )
    serve.add_argument("--no-batching", action="store_true", help="run every request chunk alone (benchmarks)")
    serve.add_argument("--max-rows-per-request", type=int, default=LimitsConfig.max_rows_per_request)
    serve.add_argument("--max-rows-per-stream", type=int, default=LimitsConfig.max_rows_per_stream)
    serve.add_argument("--max-message-mb", type=int, default=LimitsConfig.max_message_bytes // (1024 * 1024))
    serve.add_argument(
        "--max-inflight-mb",
        type=int,
        default=(LimitsConfig.max_inflight_bytes or 0) // (1024 * 1024),
        help="estimated memory all requests in progress may hold; beyond it RESOURCE_EXHAUSTED; 0: no limit",
    )
    serve.add_argument("--runtime", choices=("onnx", "torchscript"), default="onnx")
    serve.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    serve.add_argument("--intra-op-threads", type=int, default=RuntimeConfig.intra_op_threads)
    serve.add_argument("--inference-threads", type=int, default=RuntimeConfig.inference_threads)
    serve.add_argument("--grace-period-s", type=float, default=10.0)
    serve.add_argument("--drain-s", type=float, default=0.0, help="on SIGTERM: NOT_SERVING but serving this long")
    serve.add_argument("--reload-interval-s", type=float, default=30.0, help="store rescan period; 0: only SIGHUP")
    serve.add_argument("--tls-cert", type=Path, default=None, help="PEM certificate chain (TLS)")
    serve.add_argument("--tls-key", type=Path, default=None, help="PEM private key (TLS)")
    serve.add_argument("--tls-client-ca", type=Path, default=None, help="PEM CA for client certificates (mTLS)")
    serve.add_argument("--auth-token-file", type=Path, default=None, help=f"bearer tokens, one a line (+${TOKENS_ENV})")
    serve.add_argument("--auth-guard-probes", action="store_true", help="health and reflection need a token too")
    serve.add_argument("--max-connection-age-s", type=float, default=None, help="close connections after this age")
    serve.add_argument(
        "--max-concurrent-streams",
        type=int,
        default=ServerConfig.max_concurrent_streams,
        help="HTTP/2 streams one connection may hold; 0: no limit",
    )
    serve.add_argument(
        "--request-wait-s",
        type=float,
        default=CallLimits.request_wait_s,
        help="a call whose request message has not arrived this long after its headers ends DEADLINE_EXCEEDED",
    )
    serve.add_argument(
        "--max-inflight-rpcs",
        type=int,
        default=CallLimits.max_inflight_rpcs,
        help="Synthesizer calls in progress; beyond it RESOURCE_EXHAUSTED at once; 0: no limit",
    )
    serve.add_argument(
        "--max-concurrent-rpcs", type=int, default=None, help="RPCs in progress; beyond it RESOURCE_EXHAUSTED at once"
    )
    serve.add_argument(
        "--balance-temperature",
        type=float,
        default=BALANCE_SAMPLING.temperature,
        help="Balance's sampling.temperature when a request leaves it out",
    )
    serve.add_argument(
        "--balance-best-of",
        type=int,
        default=BALANCE_SAMPLING.best_of,
        help="Balance's sampling.best_of when a request leaves it out (models without a posterior: 1)",
    )
    serve.add_argument(
        "--max-pending-rpcs", type=int, default=20_000, help="received calls not yet handled; beyond it CANCELLED"
    )

    models = commands.add_parser("models", help="list the served models")
    _add_target(models)

    sample = commands.add_parser("sample", help="generate rows")
    _add_target(sample)
    _add_output(sample)
    sample.add_argument("--model", required=True)
    sample.add_argument("--rows", type=int, required=True)
    sample.add_argument("--label", default=None, help="class label")
    sample.add_argument("--proportions", default=None, help="LABEL=WEIGHT,... ")
    sample.add_argument("--seed", type=int, default=None)
    sample.add_argument("--version", type=int, default=None)
    sample.add_argument("--chunk-rows", type=int, default=None)
    _add_sampling(sample)

    balance = commands.add_parser("balance", help="rows that balance a labelled table")
    _add_target(balance)
    _add_output(balance)
    balance.add_argument("--model", required=True)
    balance.add_argument("--input", type=Path, required=True)
    balance.add_argument("--label-column", required=True)
    balance.add_argument(
        "--strategy", choices=("match_majority", "target_ratio", "explicit_counts"), default="match_majority"
    )
    balance.add_argument("--ratio", type=float, default=None)
    balance.add_argument("--counts", default=None, help="LABEL=ROWS,... (explicit_counts)")
    balance.add_argument("--seed", type=int, default=None)
    _add_sampling(balance)

    for name, help_text in (("score", "log-densities and anomaly flags"), ("encode", "latent vectors")):
        command = commands.add_parser(name, help=help_text)
        _add_target(command)
        _add_output(command)
        command.add_argument("--model", required=True)
        command.add_argument("--input", type=Path, required=True)
        command.add_argument("--version", type=int, default=None)
        if name == "score":
            command.add_argument("--fpr", type=float, default=None)
    return parser


class _InputError(Exception):
    """A bad argument or input file: reported as one line naming it, exit status 2, before any work is done."""


TABLE_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
# Served values are float32: 9 significant digits round-trip them without float64 noise digits.
CSV_FLOAT_FORMAT = "%.9g"
# Streamed chunks are small (the server's default is 2,048 rows); Parquet readers want fewer, larger row groups.
PARQUET_ROW_GROUP_ROWS = 65_536


def _table_format(path: Path, flag: str) -> str:
    table_format = TABLE_FORMATS.get(path.suffix.lower())
    if table_format is None:
        raise _InputError(f"{flag} {path}: unsupported file type {path.suffix or '(none)'!r} (use .csv or .parquet)")
    return table_format


def _check_file(path: Path | None, flag: str) -> None:
    if path is not None and not path.is_file():
        raise _InputError(f"{flag} {path}: {'not a file' if path.exists() else 'no such file'}")


def _check_output(path: Path | None) -> None:
    if path is None:
        return
    _table_format(path, "--output")
    if path.is_dir():
        raise _InputError(f"--output {path}: is a directory")
    if not path.parent.is_dir():
        raise _InputError(f"--output {path}: no such directory {path.parent}")


def _read(path: Path, flag: str = "--input") -> pd.DataFrame:
    table_format = _table_format(path, flag)
    _check_file(path, flag)
    try:
        return pd.read_parquet(path) if table_format == "parquet" else pd.read_csv(path)
    except (OSError, ValueError) as exc:  # pandas' parser errors and pyarrow's ArrowInvalid are ValueErrors
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _InputError(f"{flag} {path}: cannot read it as {table_format.upper()} ({reason})") from exc


def _check_columns(frame: pd.DataFrame, names: list[str], path: Path) -> None:
    """Every column the model reads is in the input; a missing one is named with the input's close matches."""
    missing = [name for name in names if name not in frame.columns]
    if missing:
        others = [column for column in frame.columns if column not in names]
        more = f"; {len(missing) - 1} more missing" if len(missing) > 1 else ""
        raise _InputError(f"--input {path}: no column {missing[0]!r}{close_matches(missing[0], others)}{more}")


def _pairs(text: str | None, flag: str, value_type: type[int] | type[float]) -> dict[str, Any] | None:
    """`LABEL=VALUE,...` -> {label: value}."""
    if text is None:
        return None
    pairs = {}
    for item in text.split(","):
        key, _, value = item.partition("=")
        try:
            number = value_type(value.strip())
        except ValueError:
            number = None
        if not key.strip() or number is None:
            what = "ROWS (a whole number)" if value_type is int else "WEIGHT (a number)"
            raise _InputError(f"{flag}: expected LABEL={what},..., got {item!r}")
        pairs[key.strip()] = number
    return pairs


def _client_tls(args: argparse.Namespace) -> ClientTls | None:
    if args.tls_ca is None and args.tls_cert is None and args.tls_key is None and args.tls_server_name is None:
        return None
    if (args.tls_cert is None) != (args.tls_key is None):
        raise _InputError("--tls-cert and --tls-key: give both (mutual TLS) or neither")
    for flag, path in (("--tls-ca", args.tls_ca), ("--tls-cert", args.tls_cert), ("--tls-key", args.tls_key)):
        _check_file(path, flag)
    return ClientTls(args.tls_ca, args.tls_cert, args.tls_key, args.tls_server_name)


class _TableWriter:
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
def _table_writer(path: Path | None) -> Iterator[_TableWriter]:
    writer = _TableWriter(path)
    try:
        yield writer
    except BaseException:
        writer.discard()
        raise
    writer.finish()


def _write(frame: pd.DataFrame, path: Path | None) -> None:
    with _table_writer(path) as writer:
        writer.write(frame)


def _server_config(args: argparse.Namespace, environ: Mapping[str, str]) -> ServerConfig:
    tokens = load_tokens(args.auth_token_file, environ.get(TOKENS_ENV))
    return ServerConfig(
        model_store=args.model_store,
        host=args.host,
        port=args.port,
        metrics_port=None if args.metrics_port < 0 else args.metrics_port,
        workers=args.workers,
        grace_period_s=args.grace_period_s,
        drain_s=args.drain_s,
        reload_interval_s=args.reload_interval_s,
        batcher=BatcherConfig(
            max_batch_rows=args.max_batch_rows,
            max_queue_delay_s=args.max_queue_delay_ms / 1000,
            max_queued_rows=max(args.max_queued_rows, args.max_batch_rows),
            max_queue_time_s=args.max_queue_time_ms / 1000,
            max_run_s=args.max_run_ms / 1000,
            enabled=not args.no_batching,
        ),
        runtime=RuntimeConfig(
            runtime=args.runtime,
            device=args.device,
            intra_op_threads=args.intra_op_threads,
            inference_threads=args.inference_threads,
        ),
        limits=LimitsConfig(
            max_rows_per_request=args.max_rows_per_request,
            max_rows_per_stream=args.max_rows_per_stream,
            max_message_bytes=args.max_message_mb * 1024 * 1024,
            max_inflight_bytes=args.max_inflight_mb * 1024 * 1024 or None,
        ),
        tls_cert_file=args.tls_cert,
        tls_key_file=args.tls_key,
        tls_client_ca_file=args.tls_client_ca,
        auth_tokens=tokens,
        auth_open_probes=not args.auth_guard_probes,
        max_connection_age_s=args.max_connection_age_s,
        max_concurrent_streams=args.max_concurrent_streams or None,
        calls=CallLimits(request_wait_s=args.request_wait_s, max_inflight_rpcs=args.max_inflight_rpcs or None),
        max_concurrent_rpcs=args.max_concurrent_rpcs,
        max_pending_rpcs=args.max_pending_rpcs,
        balance_sampling=SamplingOptions(args.balance_temperature, args.balance_best_of),
    )


def _sample(client: SynthClient, args: argparse.Namespace, proportions: dict[str, Any] | None) -> None:
    """Streams the rows to the output as they arrive: the same rows as one unary Sample with that seed."""
    attrs: dict[str, Any] = {}
    with (
        _table_writer(args.output) as writer,
        tqdm(total=args.rows, unit="rows", disable=args.rows < 100_000, file=sys.stderr) as progress,
    ):
        for frame in client.sample_stream(
            args.model,
            args.rows,
            label=args.label,
            proportions=proportions,
            seed=args.seed,
            version=args.version,
            chunk_rows=args.chunk_rows,
            temperature=args.temperature,
            best_of=args.best_of,
        ):
            attrs = attrs or dict(frame.attrs)
            writer.write(frame)
            progress.update(len(frame))
    if attrs:
        print(
            f"seed {attrs['seed']}, version {attrs['version']}, temperature {attrs['temperature']:g}, "
            f"best_of {attrs['best_of']}",
            file=sys.stderr,
        )


def _models(client: SynthClient) -> None:
    for model in client.models():
        summary = {
            "name": model.name,
            "version": model.version,
            "versions": list(model.versions),
            "family": model.family,
            "capabilities": list(model.capabilities),
            "columns": len(model.columns),
            "label": model.label,
            "classes": list(model.classes),
        }
        print(json.dumps(summary))


def _balance(client: SynthClient, args: argparse.Namespace, frame: pd.DataFrame, counts: dict[str, Any] | None) -> None:
    try:
        extra = client.balance(
            frame,
            args.label_column,
            args.model,
            strategy=args.strategy,
            ratio=args.ratio,
            counts=counts,
            seed=args.seed,
            temperature=args.temperature,
            best_of=args.best_of,
        )
    except ValueError as exc:
        raise _InputError(f"--input {args.input}: {exc}") from exc
    _write(extra, args.output)


def _score_or_encode(client: SynthClient, args: argparse.Namespace, frame: pd.DataFrame) -> None:
    description = client.describe(args.model, args.version)
    names = [column.name for column in description.columns]
    if args.command == "encode" and description.label is not None:  # conditional models encode given the class
        names.append(description.label)
    _check_columns(frame, names, args.input)
    try:
        if args.command == "score":
            result = client.score(args.model, frame, fpr=args.fpr, version=args.version)
        else:
            latent = client.encode(args.model, frame, version=args.version)
            result = pd.DataFrame(latent, columns=[f"z{i}" for i in range(latent.shape[1])])
    except ValueError as exc:  # the client names the column whose values it cannot send
        raise _InputError(f"--input {args.input}: {exc}") from exc
    _write(result, args.output)


def _client_command(args: argparse.Namespace) -> int:
    """Checks everything it can before connecting, so that bad input costs no server work."""
    if args.command != "models":
        _check_output(args.output)
    tls = _client_tls(args)
    proportions = counts = None
    if args.command == "sample":
        if args.rows < 1:
            raise _InputError(f"--rows must be >= 1, got {args.rows}")
        if args.label is not None and args.proportions is not None:
            raise _InputError("--label and --proportions: give one or the other, not both")
        proportions = _pairs(args.proportions, "--proportions", float)
    frame = pd.DataFrame()  # the --input rows of balance, score and encode
    if args.command in ("balance", "score", "encode"):
        frame = _read(args.input)
    if args.command == "balance":
        counts = _pairs(args.counts, "--counts", int)
        if args.label_column not in frame.columns:
            close = close_matches(args.label_column, frame.columns)
            raise _InputError(f"--label-column {args.label_column!r}: no such column in {args.input}{close}")
    token = os.environ.get(TOKEN_ENV) or None
    try:
        client = SynthClient(args.target, timeout_s=args.timeout_s, tls=tls, token=token)
    except ValueError as exc:  # a TLS file that exists but cannot be read
        raise _InputError(str(exc)) from exc
    with client:
        try:
            if args.command == "models":
                _models(client)
            elif args.command == "sample":
                _sample(client, args, proportions)
            elif args.command == "balance":
                _balance(client, args, frame, counts)
            else:
                _score_or_encode(client, args, frame)
        except grpc.RpcError as error:
            print(f"synthserve {args.command}: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    return 0


def _serve(args: argparse.Namespace) -> int:
    from serving.server import serve

    if not args.model_store.is_dir():
        raise _InputError(f"--model-store {args.model_store}: no such directory")
    _check_file(args.tls_cert, "--tls-cert")
    _check_file(args.tls_key, "--tls-key")
    _check_file(args.tls_client_ca, "--tls-client-ca")
    _check_file(args.auth_token_file, "--auth-token-file")
    try:
        config = _server_config(args, os.environ)
    except ValueError as exc:
        raise _InputError(str(exc)) from exc
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    serve(config)
    return 0


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _serve(args) if args.command == "serve" else _client_command(args)
    except _InputError as exc:
        print(f"synthserve {args.command}: {exc}", file=sys.stderr)
        return 2
