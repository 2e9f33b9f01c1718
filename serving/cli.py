"""`synthserve serve|models|sample|balance|score|encode`: argv is parsed here and nowhere else in serving."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path

import grpc
import pandas as pd
from tqdm import tqdm

from serving.auth import load_tokens
from serving.client import SynthClient
from serving.config import BatcherConfig, LimitsConfig, RuntimeConfig, ServerConfig
from serving.tls import ClientTls
from synthserve.contract import BALANCE_SAMPLING, SamplingOptions

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
    serve.add_argument("--no-batching", action="store_true", help="run every request chunk alone (benchmarks)")
    serve.add_argument("--max-rows-per-request", type=int, default=LimitsConfig.max_rows_per_request)
    serve.add_argument("--max-rows-per-stream", type=int, default=LimitsConfig.max_rows_per_stream)
    serve.add_argument("--max-message-mb", type=int, default=LimitsConfig.max_message_bytes // (1024 * 1024))
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
    serve.add_argument("--max-concurrent-streams", type=int, default=None, help="HTTP/2 streams per connection")
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


def _pairs(text: str | None) -> dict[str, str] | None:
    """`LABEL=VALUE,...` -> {label: value text}."""
    if text is None:
        return None
    pairs = {}
    for item in text.split(","):
        key, _, value = item.partition("=")
        if not value:
            raise SystemExit(f"expected LABEL=VALUE, got {item!r}")
        pairs[key.strip()] = value.strip()
    return pairs


def _read(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


# Served values are float32: 9 significant digits round-trip them without float64 noise digits.
CSV_FLOAT_FORMAT = "%.9g"


def _write(frame: pd.DataFrame, path: Path | None) -> None:
    if path is not None and path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(sys.stdout if path is None else path, index=False, float_format=CSV_FLOAT_FORMAT)


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
        ),
        tls_cert_file=args.tls_cert,
        tls_key_file=args.tls_key,
        tls_client_ca_file=args.tls_client_ca,
        auth_tokens=tokens,
        auth_open_probes=not args.auth_guard_probes,
        max_connection_age_s=args.max_connection_age_s,
        max_concurrent_streams=args.max_concurrent_streams,
        max_concurrent_rpcs=args.max_concurrent_rpcs,
        max_pending_rpcs=args.max_pending_rpcs,
        balance_sampling=SamplingOptions(args.balance_temperature, args.balance_best_of),
    )


def _sample(client: SynthClient, args: argparse.Namespace) -> pd.DataFrame:
    proportions = {k: float(v) for k, v in (_pairs(args.proportions) or {}).items()} or None
    frames = []
    with tqdm(total=args.rows, unit="rows", disable=args.rows < 100_000, file=sys.stderr) as progress:
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
            frames.append(frame)
            progress.update(len(frame))
    result = pd.concat(frames, ignore_index=True)
    attrs = frames[0].attrs
    print(
        f"seed {attrs['seed']}, version {attrs['version']}, temperature {attrs['temperature']:g}, "
        f"best_of {attrs['best_of']}",
        file=sys.stderr,
    )
    return result


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        from serving.server import serve

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
        try:
            config = _server_config(args, os.environ)
        except ValueError as exc:
            print(f"synthserve serve: {exc}", file=sys.stderr)
            return 2
        serve(config)
        return 0

    tls = None
    if args.tls_ca is not None or args.tls_cert is not None or args.tls_server_name is not None:
        tls = ClientTls(args.tls_ca, args.tls_cert, args.tls_key, args.tls_server_name)
    token = os.environ.get(TOKEN_ENV) or None
    with SynthClient(args.target, timeout_s=args.timeout_s, tls=tls, token=token) as client:
        try:
            if args.command == "models":
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
            elif args.command == "sample":
                _write(_sample(client, args), args.output)
            elif args.command == "balance":
                frame = client.balance(
                    _read(args.input),
                    args.label_column,
                    args.model,
                    strategy=args.strategy,
                    ratio=args.ratio,
                    counts={k: int(v) for k, v in (_pairs(args.counts) or {}).items()} or None,
                    seed=args.seed,
                    temperature=args.temperature,
                    best_of=args.best_of,
                )
                _write(frame, args.output)
            elif args.command == "score":
                _write(client.score(args.model, _read(args.input), fpr=args.fpr, version=args.version), args.output)
            elif args.command == "encode":
                latent = client.encode(args.model, _read(args.input), version=args.version)
                _write(pd.DataFrame(latent, columns=[f"z{i}" for i in range(latent.shape[1])]), args.output)
        except grpc.RpcError as error:
            print(f"synthserve {args.command}: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    return 0
