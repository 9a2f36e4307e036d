"""A small, fast HTTP/1.1 backend for the lab: names itself in every reply and streams a checkable byte pattern.

``GET /`` answers ``<name>\\n``; ``GET /bytes/<N>[?rate=<bytes per second>]`` streams N bytes of the pattern
``byte[i] = i % 251``. Every reply carries ``X-Served-By: <name>`` and ``X-Client: <peer ip>:<peer port>``.
Keep-alive follows HTTP/1.1 (``Connection: close`` honoured). No name resolution is ever done.
With ``--handoff-socket PATH`` it also serves connections handed over on that Unix socket (migrated connections,
``nlb_sdn.migration.handoff``), exactly like accepted ones, starting with the request bytes already queued in them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import ipaddress
import os
import signal
import socket
import sys
import time
from urllib.parse import parse_qs, urlsplit

from nlb_sdn import add_version_option
from nlb_sdn.migration import handoff

PATTERN_PERIOD = 251
CHUNK = PATTERN_PERIOD * 261
"""Largest slice :func:`pattern` returns (65511 bytes, a multiple of the period so full chunks chain seamlessly)."""
_BLOCK = bytes(i % PATTERN_PERIOD for i in range(CHUNK + PATTERN_PERIOD))
MAX_BYTES = 1 << 40
HEAD_LIMIT = 16 * 1024
IDLE_TIMEOUT = 30.0
RATE_TICK = 0.05


def pattern(offset: int, size: int) -> memoryview:
    """The pattern bytes at ``offset`` .. ``offset + size`` (``size`` at most :data:`CHUNK`)."""
    if not 0 <= size <= CHUNK:
        raise ValueError(f"pattern slice size {size} outside 0..{CHUNK}")
    start = offset % PATTERN_PERIOD
    return memoryview(_BLOCK)[start : start + size]


def pattern_sha256(size: int) -> str:
    """The SHA-256 (hex) of the first ``size`` pattern bytes: what a complete ``/bytes/<size>`` download hashes to."""
    digest = hashlib.sha256()
    for offset in range(0, size, CHUNK):
        digest.update(pattern(offset, min(CHUNK, size - offset)))
    return digest.hexdigest()


class HttpError(Exception):
    """A request the server answers with an error status and then closes."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 413: "Payload Too Large"}


def parse_head(head: bytes) -> tuple[str, str, str, dict[str, str]]:
    """Split a request head into (method, target, version, lower-cased headers), or raise HttpError(400)."""
    try:
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ")
    except ValueError:
        raise HttpError(400, "malformed request line") from None
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        raise HttpError(400, "unsupported version")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise HttpError(400, "malformed header")
        headers[key.strip().lower()] = value.strip()
    return method, target, version, headers


def wants_keep_alive(version: str, headers: dict[str, str]) -> bool:
    """Whether the connection stays open after this request (HTTP/1.1 default yes, 1.0 default no)."""
    tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    if "close" in tokens:
        return False
    return version == "HTTP/1.1" or "keep-alive" in tokens


class Backend:
    """The server state: its name and the request counter."""

    def __init__(self, name: str) -> None:
        """A backend that announces itself as ``name``."""
        self.name = name
        self.requests = 0

    def _head(self, status: int, length: int, keep_alive: bool, peer: str, content_type: str = "text/plain") -> bytes:
        """A response head with the standard headers."""
        return (
            f"HTTP/1.1 {status} {REASONS[status]}\r\n"
            f"Content-Type: {content_type}\r\n"
            f"Content-Length: {length}\r\n"
            f"X-Served-By: {self.name}\r\n"
            f"X-Client: {peer}\r\n"
            f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
        ).encode("latin-1")

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve requests on one connection until close, error or idle timeout."""
        peername = writer.get_extra_info("peername")
        peer = f"{peername[0]}:{peername[1]}" if peername else "-"
        try:
            while True:
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IDLE_TIMEOUT)
                except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
                    return
                except asyncio.LimitOverrunError:
                    await self._error(writer, HttpError(413, "request head too large"), peer)
                    return
                try:
                    keep_alive = await self._serve(reader, writer, head, peer)
                except HttpError as exc:
                    await self._error(writer, exc, peer)
                    return
                if not keep_alive:
                    return
        except ConnectionError:
            return
        finally:
            writer.close()

    async def _error(self, writer: asyncio.StreamWriter, exc: HttpError, peer: str) -> None:
        """Send an error reply and let the caller close."""
        body = f"{exc.reason}\n".encode()
        writer.write(self._head(exc.status, len(body), False, peer) + body)
        await writer.drain()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes, peer: str) -> bool:
        """Answer one request; return whether to keep the connection open."""
        method, target, version, headers = parse_head(head[:-4])
        length = headers.get("content-length", "0")
        if not length.isdigit() or int(length) > HEAD_LIMIT:
            raise HttpError(400, "bad content-length")
        if int(length):
            await reader.readexactly(int(length))
        if method not in ("GET", "HEAD"):
            raise HttpError(405, "only GET and HEAD")
        keep_alive = wants_keep_alive(version, headers)
        self.requests += 1
        url = urlsplit(target)
        if url.path == "/":
            body = f"{self.name}\n".encode()
            writer.write(self._head(200, len(body), keep_alive, peer) + (body if method == "GET" else b""))
            await writer.drain()
            return keep_alive
        if url.path.startswith("/bytes/"):
            size, rate = self._bytes_args(url.path[len("/bytes/") :], url.query)
            writer.write(self._head(200, size, keep_alive, peer, "application/octet-stream"))
            if method == "GET":
                await self._stream(writer, size, rate)
            else:
                await writer.drain()
            return keep_alive
        raise HttpError(404, "no such path")

    @staticmethod
    def _bytes_args(size_text: str, query: str) -> tuple[int, int | None]:
        """Validate the size and optional rate of a /bytes request."""
        if not size_text.isdigit() or int(size_text) > MAX_BYTES:
            raise HttpError(400, "size must be an integer 0..2**40")
        rate_values = parse_qs(query).get("rate")
        if rate_values is None:
            return int(size_text), None
        if not rate_values[-1].isdigit() or int(rate_values[-1]) < 1:
            raise HttpError(400, "rate must be a positive integer (bytes per second)")
        return int(size_text), int(rate_values[-1])

    @staticmethod
    async def _stream(writer: asyncio.StreamWriter, size: int, rate: int | None) -> None:
        """Write ``size`` pattern bytes, at most ``rate`` bytes per second when given."""
        chunk = CHUNK if rate is None else max(1, min(CHUNK, int(rate * RATE_TICK)))
        start = time.monotonic()
        sent = 0
        while sent < size:
            n = min(chunk, size - sent)
            writer.write(pattern(sent, n))
            sent += n
            await writer.drain()
            if rate is not None:
                ahead = sent / rate - (time.monotonic() - start)
                if ahead > 0:
                    await asyncio.sleep(ahead)


def listen_socket(bind: str, port: int) -> socket.socket:
    """A bound, listening, non-blocking TCP socket (``bind`` must be a literal address: no resolution); an IPv6
    ``bind`` (``::``) takes IPv4 too (dual stack)."""
    address = str(ipaddress.ip_address(bind))
    ipv6 = ":" in address
    sock = socket.socket(socket.AF_INET6 if ipv6 else socket.AF_INET, socket.SOCK_STREAM)
    if ipv6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


class HandoffListener:
    """Takes connections handed over on a Unix socket and serves each one with the backend."""

    def __init__(self, backend: Backend, listener: socket.socket) -> None:
        """Serve with ``backend`` what arrives on the listening hand-off socket ``listener``."""
        self.backend = backend
        self.listener = listener
        self.handed = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop = asyncio.get_running_loop()
        listener.setblocking(False)
        self._loop.add_reader(listener, self._accept)

    def _accept(self) -> None:
        try:
            channel, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        channel.setblocking(False)
        self._loop.add_reader(channel, self._receive, channel)

    def _receive(self, channel: socket.socket) -> None:
        self._loop.remove_reader(channel)
        with channel:
            try:
                conn, _ = handoff.receive_connection(channel)
            except (OSError, ValueError) as exc:
                print(f"nlb-sdn-backend: bad hand-off: {exc}", file=sys.stderr, flush=True)
                return
        self.handed += 1
        task = self._loop.create_task(self._serve(conn))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, conn: socket.socket) -> None:
        conn.setblocking(False)
        reader, writer = await asyncio.open_connection(sock=conn, limit=HEAD_LIMIT)
        await self.backend.handle(reader, writer)

    def close(self) -> None:
        """Stop taking connections (those already taken run on)."""
        self._loop.remove_reader(self.listener)
        self.listener.close()


async def serve(name: str, sock: socket.socket, handoff_listener: socket.socket | None = None) -> None:
    """Serve on ``sock`` (and on connections handed over on ``handoff_listener``) until SIGTERM or SIGINT."""
    backend = Backend(name)
    server = await asyncio.start_server(backend.handle, sock=sock, limit=HEAD_LIMIT)
    handed = HandoffListener(backend, handoff_listener) if handoff_listener is not None else None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    host, port = sock.getsockname()[:2]
    print(f"nlb-sdn-backend {name} listening on {host}:{port}", flush=True)
    if handoff_listener is not None:
        print(f"nlb-sdn-backend {name} taking connections on {handoff_listener.getsockname()}", flush=True)
    async with server:
        await stop.wait()
    if handed is not None:
        handed.close()
    print(f"nlb-sdn-backend {name} stopped after {backend.requests} requests", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Console entry point: ``nlb-sdn-backend --name h1 --port 80 [--bind 0.0.0.0]``."""
    parser = argparse.ArgumentParser(prog="nlb-sdn-backend", description=__doc__.splitlines()[0])
    add_version_option(parser)
    parser.add_argument("--name", required=True, help="name returned in X-Served-By and by GET /")
    parser.add_argument("--port", type=int, default=80, help="TCP port (0 picks a free one; default 80)")
    parser.add_argument(
        "--bind", default="0.0.0.0", help="IPv4 or IPv6 address to bind (default 0.0.0.0; :: takes both)"
    )
    parser.add_argument(
        "--handoff-socket",
        metavar="PATH",
        help="also serve connections handed over on this Unix socket (migrated connections)",
    )
    args = parser.parse_args(argv)
    try:
        sock = listen_socket(args.bind, args.port)
    except (OSError, ValueError) as exc:
        print(f"nlb-sdn-backend: cannot listen on {args.bind}:{args.port}: {exc}", file=sys.stderr)
        return 1
    handoff_listener = None
    if args.handoff_socket:
        try:
            handoff_listener = handoff.listen(args.handoff_socket)
        except OSError as exc:
            sock.close()
            print(f"nlb-sdn-backend: cannot listen on {args.handoff_socket}: {exc}", file=sys.stderr)
            return 1
    try:
        asyncio.run(serve(args.name, sock, handoff_listener))
    finally:
        if handoff_listener is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(args.handoff_socket)
    return 0


if __name__ == "__main__":
    sys.exit(main())
