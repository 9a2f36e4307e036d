"""Hand an established connection to the application: its file descriptor over a Unix socket (``SCM_RIGHTS``).

One hand-off is one ``SOCK_SEQPACKET`` connection to the application's hand-off socket carrying one message: a JSON
header (``{"id": migration id, "local": [ip, port], "remote": [ip, port]}``) with the descriptor attached. The
application answers ``ok`` once it owns the descriptor.
"""

from __future__ import annotations

import json
import os
import socket
import stat
from typing import Any

MAX_HEADER = 4096
ACK = b"ok"


def connect(path: str, timeout: float) -> socket.socket:
    """A connection to the application's hand-off socket at ``path`` (OSError when nobody listens)."""
    channel = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    channel.settimeout(timeout)
    try:
        channel.connect(path)
    except OSError:
        channel.close()
        raise
    return channel


def send_connection(channel: socket.socket, conn: socket.socket, header: dict[str, Any]) -> None:
    """Pass ``conn`` with ``header`` and wait for the application's ``ok`` (OSError or ConnectionError otherwise)."""
    data = json.dumps(header, separators=(",", ":")).encode()
    if len(data) > MAX_HEADER:
        raise ValueError(f"hand-off header of {len(data)} bytes is over {MAX_HEADER}")
    socket.send_fds(channel, [data], [conn.fileno()])
    if channel.recv(len(ACK)) != ACK:
        raise ConnectionError("the application did not take the connection")


def listen(path: str) -> socket.socket:
    """A listening hand-off socket at ``path`` (a stale socket file there is replaced; mode 0600)."""
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        listener.bind(path)
        os.chmod(path, 0o600)
        listener.listen(64)
    except OSError:
        listener.close()
        raise
    return listener


def receive_connection(channel: socket.socket) -> tuple[socket.socket, dict[str, Any]]:
    """The connection passed on ``channel`` and its header, after answering ``ok``; ValueError on a bad message."""
    data, fds, _, _ = socket.recv_fds(channel, MAX_HEADER, 1)
    conns = [socket.socket(fileno=fd) for fd in fds]
    try:
        header = json.loads(data)
        if len(conns) != 1 or not isinstance(header, dict):
            raise ValueError("a hand-off carries one descriptor and a JSON object")
        if conns[0].type != socket.SOCK_STREAM:
            raise ValueError("the descriptor is not a stream socket")
        channel.send(ACK)
    except (ValueError, OSError):
        for conn in conns:
            conn.close()
        raise
    return conns[0], header
