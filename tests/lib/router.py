"""What the L7 request router reads: HTTP request heads, TLS ClientHello records, and routing rules from data."""

from __future__ import annotations

import struct
from typing import Any

from nlb_sdn.router.rules import RouteRule


def http_head(target: str = "/", host: str = "www.example.com", *headers: str) -> bytes:
    """An HTTP/1.1 GET request head for ``target`` on ``host`` with more header lines (``"Name: value"``)."""
    return (f"GET {target} HTTP/1.1\r\nHost: {host}\r\n" + "".join(f"{h}\r\n" for h in headers) + "\r\n").encode()


def client_hello(
    sni: str | None = "www.example.com",
    session_id: bytes = b"",
    extra_extensions: bytes = b"",
    record_split: int | None = None,
) -> bytes:
    """A TLS 1.2-style ClientHello record (or two records when ``record_split`` cuts the handshake)."""
    extensions = b""
    if sni is not None:
        name = sni.encode()
        entry = b"\x00" + struct.pack("!H", len(name)) + name
        server_name = struct.pack("!H", len(entry)) + entry
        extensions += struct.pack("!HH", 0, len(server_name)) + server_name
    extensions += extra_extensions
    body = (
        b"\x03\x03"
        + bytes(range(32))
        + bytes([len(session_id)])
        + session_id
        + b"\x00\x04\x13\x01\xc0\x2f"
        + b"\x01\x00"
        + struct.pack("!H", len(extensions))
        + extensions
    )
    handshake = b"\x01" + len(body).to_bytes(3, "big") + body
    if record_split is None:
        return b"\x16\x03\x01" + struct.pack("!H", len(handshake)) + handshake
    first, second = handshake[:record_split], handshake[record_split:]
    return (
        b"\x16\x03\x01"
        + struct.pack("!H", len(first))
        + first
        + b"\x16\x03\x01"
        + struct.pack("!H", len(second))
        + second
    )


def route_rules(*data: dict[str, Any]) -> tuple[RouteRule, ...]:
    """Routing rules from plain config data."""
    return tuple(RouteRule.model_validate(item) for item in data)
