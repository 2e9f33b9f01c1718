"""Bearer tokens: where they come from (file, environment; only in main) and that probes can be guarded too."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from serving import cli
from serving.auth import load_tokens
from serving.cli_serve import server_config
from serving.client import SynthClient
from tests.serving.conftest import ServerThread, make_config

TOKEN = "tok-0123456789abcdef"
OTHER = "tok-fedcba9876543210"


def test_tokens_come_from_the_file_and_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"# rotated 2026-11-21\n{TOKEN}\n\n  {OTHER}  \n")
    assert load_tokens(path, None) == (TOKEN, OTHER)
    assert load_tokens(None, f" {OTHER} ,{TOKEN}") == (OTHER, TOKEN)
    assert load_tokens(path, TOKEN) == (TOKEN, OTHER)  # duplicates collapse
    assert load_tokens(None, None) == ()


@pytest.mark.parametrize(
    ("content", "env", "message"),
    [
        ("# nothing\n\n", None, "no tokens"),
        (None, "short", r"auth token #1: must be >= 16 characters"),
        (f"{TOKEN}\n", "has a space inside it", r"auth token #2"),
    ],
)
def test_bad_token_sources_are_refused(tmp_path: Path, content: str | None, env: str | None, message: str) -> None:
    path = None
    if content is not None:
        path = tmp_path / "tokens"
        path.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_tokens(path, env)


def test_unreadable_token_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"auth token file .*missing: cannot read"):
        load_tokens(tmp_path / "missing", None)


def test_serve_flags_build_the_security_config(tmp_path: Path, store: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(TOKEN + "\n")
    argv = ["serve", "--model-store", str(store), "--auth-token-file", str(path), "--auth-guard-probes"]
    argv += ["--max-connection-age-s", "300", "--tls-cert", "c.pem", "--tls-key", "k.pem", "--tls-client-ca", "ca.pem"]
    config = server_config(cli.build_parser().parse_args(argv), {cli.TOKENS_ENV: OTHER})
    assert config.auth_tokens == (TOKEN, OTHER) and not config.auth_open_probes
    assert config.max_connection_age_s == 300
    assert (config.tls_cert_file, config.tls_key_file, config.tls_client_ca_file) == (
        Path("c.pem"),
        Path("k.pem"),
        Path("ca.pem"),
    )


@pytest.fixture(scope="module")
def guarded(store: Path) -> Iterator[ServerThread]:
    config = dataclasses.replace(make_config(store), auth_tokens=(TOKEN, OTHER), auth_open_probes=False)
    running = ServerThread(config)
    yield running
    running.stop()


def _probe(target: str, token: str | None) -> None:
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), metadata=metadata)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), metadata=metadata
        )
        assert "synthserve.v1.Synthesizer" in {s.name for s in next(reflection).list_services_response.service}


@pytest.mark.parametrize("token", [None, "", TOKEN[:-1], TOKEN + "x", TOKEN.upper(), f"{TOKEN},{OTHER}"])
def test_guarded_probes_and_rpcs_refuse_bad_tokens(guarded: ServerThread, token: str | None) -> None:
    with pytest.raises(grpc.RpcError) as info:
        _probe(guarded.target, token)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with SynthClient(guarded.target, token=token, timeout_s=10) as client, pytest.raises(grpc.RpcError) as rpc:
        client.models()
    assert rpc.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("token", [TOKEN, OTHER])
def test_guarded_probes_and_rpcs_serve_valid_tokens(guarded: ServerThread, token: str) -> None:
    _probe(guarded.target, token)
    with SynthClient(guarded.target, token=token, timeout_s=10) as client:
        assert len(client.sample("gauss", 4, seed=2)) == 4
