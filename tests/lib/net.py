"""Loopback sockets: free ports, established connections and one-shot request/response exchanges."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

EXCHANGE_TIMEOUT = 5.0


def free_port(address: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on at ``address`` right now (bound and released)."""
    with socket.socket() as probe:
        probe.bind((address, 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def loopback_connection(
    client_timeout: float | None = EXCHANGE_TIMEOUT,
) -> Iterator[tuple[socket.socket, socket.socket, socket.socket]]:
    """An established TCP connection over 127.0.0.1 for the block: (listener, client, accepted server side)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        client = socket.create_connection(listener.getsockname(), timeout=client_timeout)
        server, _ = listener.accept()
        with client, server:
            yield listener, client, server


def exchange(port: int, data: bytes, address: str = "127.0.0.1", chunks: int = 1, pause: float = 0.0) -> bytes:
    """Send ``data`` (in ``chunks``, ``pause`` seconds apart) and read until the peer closes or resets the
    connection; what it sent back."""
    reply = b""
    with socket.create_connection((address, port), timeout=EXCHANGE_TIMEOUT) as sock:
        size = -(-len(data) // chunks)
        try:
            for start in range(0, len(data), size):
                sock.sendall(data[start : start + size])
                if pause:
                    time.sleep(pause)
            while chunk := sock.recv(65536):
                reply += chunk
        except (ConnectionResetError, BrokenPipeError):
            pass
    return reply
