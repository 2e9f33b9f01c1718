"""`synthserve models|sample|balance|score|encode|bulk`: `SynthClient` calls between input and output tables.

Everything that can be checked before connecting is (arguments, input and output files, TLS files), so that bad
input costs no server work; a call the server refuses prints its status code and message, exit status 1.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping
from typing import Any

import grpc
import pandas as pd
from tqdm import tqdm

from serving.bulk import BulkRequest, OtherRequestError, run_partitions
from serving.cli_files import InputError, check_columns, check_file, check_output, read_table, table_writer, write_table
from serving.client import SynthClient
from serving.tls import ClientTls
from synthserve.contract import close_matches

__all__ = ["TOKEN_ENV", "bulk_request", "client_command"]

TOKEN_ENV = "SYNTHSERVE_TOKEN"  # the bearer token to send: from the environment, as argv shows in `ps`
# Rows per stream message of a bulk partition unless given: its largest divisor of the server's default chunk.
DEFAULT_BULK_CHUNK_ROWS = 2_048
INDEX_ENV = "JOB_COMPLETION_INDEX"  # a Kubernetes Indexed Job's completion index: `bulk`'s default partition


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
            raise InputError(f"{flag}: expected LABEL={what},..., got {item!r}")
        pairs[key.strip()] = number
    return pairs


def _where(items: list[str] | None) -> dict[str, Any] | None:
    """`--where COLUMN=VALUE` (a category or whole number) and `--where COLUMN=LOW..HIGH` -> client conditions."""
    conditions: dict[str, Any] = {}
    for item in items or []:
        column, sep, test = item.partition("=")
        if not sep or not column or not test:
            raise InputError(f"--where {item!r}: expected COLUMN=VALUE or COLUMN=LOW..HIGH")
        low, dots, high = test.partition("..")
        if dots:
            try:
                conditions[column] = (float(low), float(high))
            except ValueError:
                raise InputError(f"--where {item!r}: LOW..HIGH must be two numbers") from None
        else:
            conditions[column] = test
    return conditions or None


def _client_tls(args: argparse.Namespace) -> ClientTls | None:
    """The `--tls-*` flags as ClientTls (None: plaintext), every file checked."""
    if args.tls_ca is None and args.tls_cert is None and args.tls_key is None and args.tls_server_name is None:
        return None
    if (args.tls_cert is None) != (args.tls_key is None):
        raise InputError("--tls-cert and --tls-key: give both (mutual TLS) or neither")
    for flag, path in (("--tls-ca", args.tls_ca), ("--tls-cert", args.tls_cert), ("--tls-key", args.tls_key)):
        check_file(path, flag)
    return ClientTls(args.tls_ca, args.tls_cert, args.tls_key, args.tls_server_name)


def _sample(
    client: SynthClient,
    args: argparse.Namespace,
    proportions: dict[str, Any] | None,
    conditions: dict[str, Any] | None,
) -> None:
    """Streams the rows to the output as they arrive: the same rows as one unary Sample with that seed."""
    attrs: dict[str, Any] = {}
    with (
        table_writer(args.output) as writer,
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
            guidance=args.guidance,
            conditions=conditions,
        ):
            attrs = attrs or dict(frame.attrs)
            writer.write(frame)
            progress.update(len(frame))
    if attrs:
        print(
            f"seed {attrs['seed']}, version {attrs['version']}, temperature {attrs['temperature']:g}, "
            f"best_of {attrs['best_of']}, guidance {attrs['guidance']:g}",
            file=sys.stderr,
        )


def bulk_request(args: argparse.Namespace, environ: Mapping[str, str]) -> tuple[BulkRequest, list[int]]:
    """`bulk`'s flags -> the request and the partitions this process writes (--all, --index, or the Job's)."""
    proportions = _pairs(args.proportions, "--proportions", float)
    try:
        request = BulkRequest(
            model=args.model,
            version=args.version,
            num_rows=args.rows,
            seed=args.seed,
            partition_rows=args.partition_rows,
            label=args.label,
            proportions=None if proportions is None else tuple(proportions.items()),
            chunk_rows=args.chunk_rows or math.gcd(args.partition_rows, DEFAULT_BULK_CHUNK_ROWS),
            temperature=args.temperature,
            best_of=args.best_of,
            guidance=args.guidance,
        )
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    if args.workers < 1:
        raise InputError(f"--workers must be >= 1, got {args.workers}")
    if args.all:
        return request, list(range(request.partitions))
    index = args.index
    if index is None:
        if INDEX_ENV not in environ:
            raise InputError(f"--index: give a partition index, --all, or run as an Indexed Job (${INDEX_ENV})")
        try:
            index = int(environ[INDEX_ENV])
        except ValueError:
            raise InputError(f"${INDEX_ENV}: expected a whole number, got {environ[INDEX_ENV]!r}") from None
    try:
        request.rows(index)
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    return request, [index]


def _bulk(client: SynthClient, args: argparse.Namespace, request: BulkRequest, indices: list[int]) -> None:
    try:
        paths = run_partitions(client, request, indices, args.out, workers=args.workers)
    except OtherRequestError as exc:
        raise InputError(f"--out {exc}") from exc
    for path in paths:
        print(path)


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


def _balance(
    client: SynthClient,
    args: argparse.Namespace,
    frame: pd.DataFrame,
    counts: dict[str, Any] | None,
    conditions: dict[str, Any] | None,
) -> None:
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
            guidance=args.guidance,
            conditions=conditions,
        )
    except ValueError as exc:
        raise InputError(f"--input {args.input}: {exc}") from exc
    write_table(extra, args.output)


def _score_or_encode(client: SynthClient, args: argparse.Namespace, frame: pd.DataFrame) -> None:
    description = client.describe(args.model, args.version)
    names = [column.name for column in description.columns]
    if args.command == "encode" and description.label is not None:  # conditional models encode given the class
        names.append(description.label)
    check_columns(frame, names, args.input)
    try:
        if args.command == "score":
            result = client.score(args.model, frame, fpr=args.fpr, version=args.version)
        else:
            latent = client.encode(args.model, frame, version=args.version)
            result = pd.DataFrame(latent, columns=[f"z{i}" for i in range(latent.shape[1])])
    except ValueError as exc:  # the client names the column whose values it cannot send
        raise InputError(f"--input {args.input}: {exc}") from exc
    write_table(result, args.output)


def client_command(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Checks everything it can before connecting, so that bad input costs no server work."""
    if args.command not in ("models", "bulk"):
        check_output(args.output)
    tls = _client_tls(args)
    proportions = counts = None
    bulk: tuple[BulkRequest, list[int]] | None = None
    conditions = _where(getattr(args, "where", None))
    if args.command == "bulk":
        if args.out.exists() and not args.out.is_dir():
            raise InputError(f"--out {args.out}: not a directory")
        bulk = bulk_request(args, environ)
    if args.command == "sample":
        if args.rows < 1:
            raise InputError(f"--rows must be >= 1, got {args.rows}")
        if args.label is not None and args.proportions is not None:
            raise InputError("--label and --proportions: give one or the other, not both")
        proportions = _pairs(args.proportions, "--proportions", float)
    frame = pd.DataFrame()  # the --input rows of balance, score and encode
    if args.command in ("balance", "score", "encode"):
        frame = read_table(args.input)
    if args.command == "balance":
        counts = _pairs(args.counts, "--counts", int)
        if args.label_column not in frame.columns:
            close = close_matches(args.label_column, frame.columns)
            raise InputError(f"--label-column {args.label_column!r}: no such column in {args.input}{close}")
    token = environ.get(TOKEN_ENV) or None
    try:
        client = SynthClient(args.target, timeout_s=args.timeout_s, tls=tls, token=token)
    except ValueError as exc:  # a TLS file that exists but cannot be read
        raise InputError(str(exc)) from exc
    with client:
        try:
            if args.command == "models":
                _models(client)
            elif args.command == "sample":
                _sample(client, args, proportions, conditions)
            elif args.command == "balance":
                _balance(client, args, frame, counts, conditions)
            elif bulk is not None:
                _bulk(client, args, *bulk)
            else:
                _score_or_encode(client, args, frame)
        except grpc.RpcError as error:
            print(f"synthserve {args.command}: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    return 0
