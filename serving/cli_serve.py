"""`synthserve serve`: the parsed flags and the environment become one frozen `ServerConfig`, checked before any
model loads; `serving.server.serve` takes it from there."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping

from serving.auth import load_tokens
from serving.cli_files import InputError, check_file
from serving.config import BatcherConfig, CallLimits, LimitsConfig, RuntimeConfig, ServerConfig
from synthserve.contract import SamplingOptions

__all__ = ["TOKENS_ENV", "serve_command", "server_config"]

# Secrets come from the environment, never argv (which `ps` shows to every user).
TOKENS_ENV = "SYNTHSERVE_AUTH_TOKENS"  # comma-separated accepted bearer tokens


def server_config(args: argparse.Namespace, environ: Mapping[str, str]) -> ServerConfig:
    """The `serve` flags and `environ` as a ServerConfig; ValueError names a bad value."""
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
            early_dispatch=not args.no_early_dispatch,
            inline_max_s=args.inline_max_ms / 1000,
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


def serve_command(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Serves until stopped; the files the flags name are checked first, so a typo is one line, not a traceback."""
    from serving.server import serve  # here, so that client commands start without the server's modules

    if not args.model_store.is_dir():
        raise InputError(f"--model-store {args.model_store}: no such directory")
    check_file(args.tls_cert, "--tls-cert")
    check_file(args.tls_key, "--tls-key")
    check_file(args.tls_client_ca, "--tls-client-ca")
    check_file(args.auth_token_file, "--auth-token-file")
    try:
        config = server_config(args, environ)
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    serve(config)
    return 0
