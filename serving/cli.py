"""`synthserve serve|models|sample|balance|score|encode|bulk`: argv and the environment are read here and nowhere else
in serving (`main()` hands the environment on).

The flags and their defaults (taken from the config dataclasses) are here; what each command does with them is
`serving.cli_serve` (the server's config) and `serving.cli_client` (client calls between tables).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from serving.cli_client import TOKEN_ENV, client_command
from serving.cli_files import InputError
from serving.cli_serve import TOKENS_ENV, serve_command
from serving.config import BatcherConfig, CallLimits, LimitsConfig, RuntimeConfig, ServerConfig
from synthserve.contract import BALANCE_SAMPLING

# The environment names are re-exported: they are part of the command line's interface.
__all__ = ["TOKENS_ENV", "TOKEN_ENV", "build_parser", "main"]


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
    parser.add_argument(
        "--best-of", type=int, default=None, help="candidates per row; the one with the highest class margin is kept"
    )
    parser.add_argument(
        "--guidance", type=float, default=None, help="classifier-free guidance weight of a diffusion model, [0, 10]"
    )


def _add_where(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--where",
        action="append",
        metavar="COLUMN=VALUE|COLUMN=LOW..HIGH",
        help="only rows whose COLUMN is VALUE (a category or whole number) or within [LOW, HIGH]; repeat: all hold",
    )


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
    serve.add_argument(
        "--no-early-dispatch",
        action="store_true",
        help="a batch always waits out --max-queue-delay-ms, even for a lone caller or when arrivals pause",
    )
    serve.add_argument(
        "--inline-max-ms",
        type=float,
        default=BatcherConfig.inline_max_s * 1000,
        help="a lone caller's batch expected to run within this long runs on the event loop; 0: never",
    )
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
    _add_where(sample)

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
    _add_where(balance)

    bulk = commands.add_parser(
        "bulk", help="one seeded request written as Parquet partitions (a Kubernetes Indexed Job, or --all here)"
    )
    _add_target(bulk)
    bulk.add_argument("--out", type=Path, required=True, help="directory of part-NNNNN-of-NNNNN.parquet files")
    bulk.add_argument("--model", required=True)
    bulk.add_argument("--version", type=int, required=True, help="the model version every partition comes from")
    bulk.add_argument("--rows", type=int, required=True, help="rows of the whole request")
    bulk.add_argument("--seed", type=int, required=True)
    bulk.add_argument("--partition-rows", type=int, default=1_048_576, help="rows per partition file")
    bulk.add_argument(
        "--chunk-rows",
        type=int,
        default=None,
        help="rows per stream message, divides --partition-rows (default: <= 2048)",
    )
    bulk.add_argument("--label", default=None, help="class label")
    bulk.add_argument("--proportions", default=None, help="LABEL=WEIGHT,... ")
    which = bulk.add_mutually_exclusive_group()
    which.add_argument(
        "--index", type=int, default=None, help="the partition to write (default: $JOB_COMPLETION_INDEX)"
    )
    which.add_argument("--all", action="store_true", help="every partition, on this machine")
    bulk.add_argument("--workers", type=int, default=1, help="partitions written at once (with --all)")
    _add_sampling(bulk)

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


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            return serve_command(args, os.environ)
        return client_command(args, os.environ)
    except InputError as exc:
        print(f"synthserve {args.command}: {exc}", file=sys.stderr)
        return 2
