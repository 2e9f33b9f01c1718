"""TLS and mutual TLS through real servers: only clients that verify the server, and for mTLS that carry a
certificate from the trusted CA, get an answer. Certificates are generated here (tests/reliability/certs.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from serving.client import SynthClient
from serving.tls import ClientTls
from tests.reliability.certs import Authority, Issued
from tests.serving.conftest import ServerThread, make_config


@dataclasses.dataclass(frozen=True)
class Pki:
    trusted: Authority
    rogue: Authority
    server: Issued
    client: Issued
    rogue_client: Issued


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    trusted, rogue = Authority(directory, "trusted CA"), Authority(directory, "rogue CA")
    return Pki(
        trusted,
        rogue,
        trusted.issue("localhost", server=True),
        trusted.issue("alice", server=False),
        rogue.issue("mallory", server=False),
    )


def _server(store: Path, pki: Pki, *, mutual: bool) -> ServerThread:
    return ServerThread(
        dataclasses.replace(
            make_config(store),
            tls_cert_file=pki.server.cert_file,
            tls_key_file=pki.server.key_file,
            tls_client_ca_file=pki.trusted.ca_file if mutual else None,
        )
    )


@pytest.fixture(scope="module")
def servers(store: Path, pki: Pki) -> Iterator[dict[str, ServerThread]]:
    running = {"tls": _server(store, pki, mutual=False), "mtls": _server(store, pki, mutual=True)}
    yield running
    for server in running.values():
        server.stop()


def _client_tls(pki: Pki, case: str) -> ClientTls | None:
    return {
        "plaintext": None,
        "server-only": ClientTls(pki.trusted.ca_file, server_name="localhost"),
        "with-client-cert": ClientTls(pki.trusted.ca_file, pki.client.cert_file, pki.client.key_file, "localhost"),
        "rogue-client-cert": ClientTls(
            pki.trusted.ca_file, pki.rogue_client.cert_file, pki.rogue_client.key_file, "localhost"
        ),
        "trusts-rogue-ca": ClientTls(pki.rogue.ca_file, pki.client.cert_file, pki.client.key_file, "localhost"),
        "wrong-server-name": ClientTls(pki.trusted.ca_file, pki.client.cert_file, pki.client.key_file, "evil.example"),
    }[case]


@pytest.mark.parametrize(
    ("server", "case", "served"),
    [
        ("tls", "server-only", True),
        ("tls", "with-client-cert", True),
        ("tls", "plaintext", False),
        ("tls", "trusts-rogue-ca", False),
        ("tls", "wrong-server-name", False),
        ("mtls", "with-client-cert", True),
        ("mtls", "server-only", False),  # no client certificate
        ("mtls", "rogue-client-cert", False),  # a certificate the server's CA did not sign
        ("mtls", "plaintext", False),
        ("mtls", "trusts-rogue-ca", False),
    ],
)
def test_only_verified_peers_are_served(
    servers: dict[str, ServerThread], pki: Pki, server: str, case: str, served: bool
) -> None:
    with SynthClient(servers[server].target, timeout_s=10, tls=_client_tls(pki, case)) as client:
        if served:
            frame = client.sample("gauss", 5, seed=1, version=1)
            assert len(frame) == 5 and frame.attrs["version"] == 1
            return
        with pytest.raises(grpc.RpcError) as info:
            client.sample("gauss", 5, seed=1)
    # The handshake fails, so no RPC reaches the server: UNAVAILABLE, never an answer.
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_client_tls_names_the_bad_field(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cert_file and key_file go together"):
        ClientTls(pki.trusted.ca_file, cert_file=pki.client.cert_file)
    with pytest.raises(ValueError, match=r"tls\.ca_file: cannot read"):
        ClientTls(tmp_path / "missing.pem").credentials()
