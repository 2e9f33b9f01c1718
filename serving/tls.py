"""Client-side TLS and mutual TLS: PEM files -> gRPC channel credentials, built where the client is made.

The server side lives in `serving.server.create_server` (`ServerConfig.tls_*`); this is its counterpart for
`SynthClient` and the CLI, so callers name files instead of assembling `grpc.ssl_channel_credentials` by hand.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

__all__ = ["ClientTls"]


@dataclass(frozen=True)
class ClientTls:
    """How a client verifies the server (`ca_file`, or the system roots) and, for mTLS, proves who it is.

    File fields take a `Path` or a `str` path; they are stored as `Path`."""

    ca_file: Path | str | None = None  # PEM CA that signed the server certificate; None: the system's roots
    cert_file: Path | str | None = None  # PEM client certificate chain (mTLS), with key_file
    key_file: Path | str | None = None
    server_name: str | None = None  # name to check the server certificate against, when it differs from the target

    def __post_init__(self) -> None:
        for field in ("ca_file", "cert_file", "key_file"):
            value = getattr(self, field)
            if value is not None and not isinstance(value, Path):
                if not isinstance(value, str | os.PathLike):
                    raise TypeError(f"tls.{field}: expected a path (str or Path), got {type(value).__name__}")
                object.__setattr__(self, field, Path(value))  # frozen: the one place the fields are normalized
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("tls: cert_file and key_file go together (mutual TLS needs both)")

    def credentials(self) -> grpc.ChannelCredentials:
        """Reads the PEM files now, so a missing or unreadable file fails at construction, naming it."""
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca_file, "ca_file"),
            private_key=_read(self.key_file, "key_file"),
            certificate_chain=_read(self.cert_file, "cert_file"),
        )

    def channel_options(self) -> list[tuple[str, Any]]:
        return [] if self.server_name is None else [("grpc.ssl_target_name_override", self.server_name)]


def _read(path: Path | str | None, field: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"tls.{field}: cannot read {path} ({exc.strerror})") from exc
