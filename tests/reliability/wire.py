"""Raw HTTP/2 for the transport fuzzer: frames and HPACK literals written by hand, so that anything can be sent.

Only what a client sends is encoded (literal header fields without indexing, no Huffman); what the server sends
back is drained and ignored: the fuzzer judges the server by its metrics, its log and its later answers.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading

__all__ = ["PREFACE", "Connection", "frame", "grpc_message", "headers_block"]

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20


def frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))[1:] + bytes([kind & 0xFF, flags & 0xFF]) + struct.pack(">I", stream) + payload
    )


def _integer(value: int, prefix_bits: int, first: int = 0) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = [first | limit]
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def headers_block(fields: list[tuple[bytes, bytes]]) -> bytes:
    """HPACK: each field as a literal without indexing, new name, no Huffman coding."""
    block = b""
    for name, value in fields:
        block += b"\x00" + _integer(len(name), 7) + name + _integer(len(value), 7) + value
    return block


def grpc_message(body: bytes, compressed: int = 0, declared: int | None = None) -> bytes:
    """gRPC's length-prefixed message: flag byte, 4-byte big-endian length (`declared` may lie), body."""
    return bytes([compressed & 0xFF]) + struct.pack(">I", len(body) if declared is None else declared) + body


def request_headers(
    path: str | bytes, *, content_type: bytes = b"application/grpc", extra: tuple[tuple[bytes, bytes], ...] = ()
) -> bytes:
    fields = [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", path if isinstance(path, bytes) else path.encode()),
        (b":authority", b"localhost"),
        (b"content-type", content_type),
        (b"te", b"trailers"),
        *extra,
    ]
    return headers_block(fields)


class Connection:
    """One TCP connection with the preface and an empty SETTINGS sent; replies are read and dropped."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.sendall(PREFACE + frame(SETTINGS, 0, 0, b""))
        self.received = 0
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        try:
            while chunk := self.sock.recv(65536):
                self.received += len(chunk)
        except OSError:
            pass

    def send(self, data: bytes) -> bool:
        try:
            self.sock.sendall(data)
        except OSError:  # the server closed the connection: an answer too
            return False
        return True

    def close(self, linger_s: float = 0.05) -> None:
        self._reader.join(linger_s)
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
