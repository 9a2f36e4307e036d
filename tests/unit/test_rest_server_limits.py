"""The REST server under careless or hostile clients, over 127.0.0.1 only: TLS, a client that sends half a header,
200 slow sockets at once, and a broken chunked body."""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nlb_sdn.config import parse_config
from nlb_sdn.rest import ServerLimits, listen, make_app, serve_on, tls_context
from nlb_sdn.rest.server import eventlet  # the server module silences eventlet's import-time deprecation warning
from tests.unit.test_rest import BASE, FakeBackend

SLOW_SOCKETS = 200
LIMITS = ServerLimits(max_connections=SLOW_SOCKETS + 50, header_timeout=0.5, request_timeout=2.0, socket_timeout=2.0)


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend(parse_config(json.loads(json.dumps(BASE)), source="test"))


def run_server(backend: FakeBackend, tls: ssl.SSLContext | None = None) -> Iterator[int]:
    """Serve the app on 127.0.0.1 in a green thread for the test; yields the port."""
    sock = listen("127.0.0.1", 0, tls)
    server = eventlet.spawn(serve_on, sock, make_app(backend), None, LIMITS)
    try:
        eventlet.sleep(0)
        yield sock.getsockname()[1]
    finally:
        server.kill()


@pytest.fixture
def port(backend: FakeBackend) -> Iterator[int]:
    yield from run_server(backend)


def get(port: int, path: str = "/v1/vips/web", tls: ssl.SSLContext | None = None) -> int:
    """The status of one GET over a green HTTP (or, with ``tls``, HTTPS) connection."""
    from eventlet.green.http import client as green_http  # after nlb_sdn.rest (see above)

    if tls is None:
        connection = green_http.HTTPConnection("127.0.0.1", port, timeout=5)
    else:
        connection = green_http.HTTPSConnection("127.0.0.1", port, timeout=5, context=tls)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return int(response.status)
    finally:
        connection.close()


def green_socket(port: int) -> Any:
    """A connected green TCP socket to the server."""
    sock = eventlet.green.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    return sock


def test_half_a_header_is_cut_off(port: int) -> None:
    with eventlet.Timeout(10):
        sock = green_socket(port)
        try:
            sock.sendall(b"GET /v1/vips HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
            started = time.monotonic()
            assert sock.recv(1024) == b""  # the server closed it
            assert time.monotonic() - started < LIMITS.header_timeout + 1.5
        finally:
            sock.close()


def test_the_api_answers_while_200_slow_sockets_are_open(port: int) -> None:
    with eventlet.Timeout(20):
        slow = [green_socket(port) for _ in range(SLOW_SOCKETS)]
        try:
            for sock in slow:
                sock.sendall(b"POST /v1/vips HTTP/1.1\r\nHost: x\r\n")
            started = time.monotonic()
            assert get(port) == 200
            assert time.monotonic() - started < 2.0
        finally:
            for sock in slow:
                sock.close()


def test_a_slow_body_is_cut_off_by_the_request_deadline(port: int) -> None:
    with eventlet.Timeout(10):
        sock = green_socket(port)
        try:
            head = b"POST /v1/vips HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
            sock.sendall(head + b"{")
            started = time.monotonic()
            while sock.recv(1024):
                pass
            assert time.monotonic() - started < LIMITS.request_timeout + 1.5
        finally:
            sock.close()
        assert get(port) == 200


def test_a_bad_chunk_size_is_a_4xx(port: int, backend: FakeBackend) -> None:
    with eventlet.Timeout(10):
        sock = green_socket(port)
        try:
            sock.sendall(
                b"POST /v1/vips HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n"
            )
            status = sock.recv(1024).split(b"\r\n")[0]
        finally:
            sock.close()
    assert status.startswith(b"HTTP/1.1 4"), status
    assert backend.applied == []


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 made now with the openssl CLI."""
    if shutil.which("openssl") is None:
        pytest.skip("no openssl CLI")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert)),
            *("-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return str(cert), str(key)


def test_tls(backend: FakeBackend, certificate: tuple[str, str]) -> None:
    cert, key = certificate
    for port in run_server(backend, tls_context(cert, key)):
        with eventlet.Timeout(10):
            client = eventlet.green.ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            client.load_verify_locations(cert)
            assert get(port, tls=client) == 200
            with pytest.raises(Exception):  # noqa: B017 - a reset, a closed connection or a bad status line
                get(port)  # plain HTTP to the TLS port gets nothing
