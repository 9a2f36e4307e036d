"""Lab backend and load client over loopback (no Mininet, no root): names, keep-alive, pattern and failure reports."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from nlb_sdn.lab.backend import CHUNK, PATTERN_PERIOD, pattern, pattern_sha256
from nlb_sdn.lab.client import download, percentiles, run_connections
from tests.lib.net import exchange, free_port
from tests.lib.processes import start_backend, stop_process


@pytest.fixture(scope="module")
def backend() -> Iterator[int]:
    """Port of a backend named h1 on loopback, shared by the module."""
    proc, port = start_backend("h1")
    yield port
    stop_process(proc)
    assert proc.returncode == 0


def _serve_once(response: bytes) -> int:
    """A one-shot fake server on loopback that answers any request with ``response`` and closes."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(10)

    def serve() -> None:
        """Accept one connection, read the request, send the canned response."""
        with listener:
            conn, _ = listener.accept()
            with conn:
                conn.recv(4096)
                conn.sendall(response)

    threading.Thread(target=serve, daemon=True).start()
    return listener.getsockname()[1]


def test_pattern_is_periodic_and_chains():
    assert bytes(pattern(0, 5)) == bytes([0, 1, 2, 3, 4])
    assert bytes(pattern(PATTERN_PERIOD - 1, 3)) == bytes([250, 0, 1])
    assert CHUNK % PATTERN_PERIOD == 0
    whole = bytes(pattern(0, CHUNK)) + bytes(pattern(CHUNK, 100))
    assert whole == bytes(i % PATTERN_PERIOD for i in range(CHUNK + 100))
    with pytest.raises(ValueError):
        pattern(0, CHUNK + 1)


def test_root_names_the_backend_and_closes_on_request(backend):
    reply = exchange(backend, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert b"\r\nX-Served-By: h1" in head and b"\r\nConnection: close" in head
    assert b"\r\nX-Client: 127.0.0.1:" in head
    assert body == b"h1\n"


def test_keep_alive_serves_several_requests_on_one_connection(backend):
    request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    data = exchange(backend, request + request + b"GET /bytes/3 HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert data.count(b"X-Served-By: h1") == 3
    assert data.count(b"Connection: keep-alive") == 2
    assert data.endswith(b"Connection: close\r\n\r\n\x00\x01\x02")


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /nope HTTP/1.1\r\n\r\n", b"404"),
        (b"DELETE / HTTP/1.1\r\n\r\n", b"405"),
        (b"GET /bytes/abc HTTP/1.1\r\n\r\n", b"400"),
        (b"GET /bytes/10?rate=0 HTTP/1.1\r\n\r\n", b"400"),
        (b"nonsense\r\n\r\n", b"400"),
    ],
)
def test_bad_requests_get_an_error_and_a_close(backend, request_bytes, status):
    reply = exchange(backend, request_bytes)
    assert reply.startswith(b"HTTP/1.1 " + status)
    assert b"X-Served-By: h1" in reply and b"Connection: close" in reply


def test_connections_mode_counts_served_by(backend):
    summary = run_connections("127.0.0.1", backend, count=200, concurrency=8, timeout=30)
    assert summary["total"] == summary["ok"] == 200
    assert summary["errors"] == 0 and summary["error_kinds"] == {}
    assert summary["served_by"] == {"h1": 200}
    assert 0 < summary["connect_ms"]["p50"] <= summary["connect_ms"]["p99"] <= summary["connect_ms"]["max"]
    assert summary["rate"] > 0 and summary["elapsed_s"] > 0


def test_connections_mode_is_bounded_by_time(backend):
    started = time.monotonic()
    summary = run_connections("127.0.0.1", backend, count=10_000, rate=20, timeout=1.0)
    assert time.monotonic() - started < 5
    assert 5 <= summary["total"] < 10_000
    assert summary["errors"] == 0


def test_connections_mode_reports_refused():
    summary = run_connections("127.0.0.1", free_port(), count=5, timeout=10)
    assert summary["ok"] == 0 and summary["errors"] == 5
    assert summary["error_kinds"] == {"refused": 5}
    assert summary["connect_ms"]["p50"] is None


def test_download_verifies_length_and_checksum(backend):
    size = 3 * CHUNK + 12345
    result = download("127.0.0.1", backend, size, timeout=30)
    assert result["ok"] is True and result["error"] is None
    assert result["bytes"] == size and result["served_by"] == "h1"
    assert result["sha256"] == pattern_sha256(size)
    assert result["mbps"] > 0


def test_rate_limited_download_takes_its_time(backend):
    result = download("127.0.0.1", backend, 60_000, rate=100_000, timeout=30)
    assert result["ok"] is True and result["sha256"] == pattern_sha256(60_000)
    assert 0.4 <= result["elapsed_s"] < 5


def test_download_detects_a_short_transfer():
    port = _serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nX-Served-By: fake\r\n\r\n" + bytes(range(100)))
    result = download("127.0.0.1", port, 1000, timeout=10)
    assert result["ok"] is False and result["bytes"] == 100 and result["served_by"] == "fake"
    assert result["error"] == "short transfer"


def test_download_detects_corrupt_data():
    body = bytearray(i % PATTERN_PERIOD for i in range(1000))
    body[700] ^= 0xFF
    port = _serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nX-Served-By: fake\r\n\r\n" + bytes(body))
    result = download("127.0.0.1", port, 1000, timeout=10)
    assert result["ok"] is False and result["error"] == "corrupt data" and result["corrupt_at"] == 700


def test_client_cli_prints_json_and_sets_the_exit_status(backend):
    ok = subprocess.run(
        [
            sys.executable,
            "-m",
            "nlb_sdn.lab.client",
            "connections",
            "127.0.0.1",
            "--port",
            str(backend),
            "-n",
            "20",
            "-c",
            "4",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["served_by"] == {"h1": 20}
    down = subprocess.run(
        [
            sys.executable,
            "-m",
            "nlb_sdn.lab.client",
            "download",
            "127.0.0.1",
            "--port",
            str(backend),
            "--bytes",
            "100000",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert down.returncode == 0 and json.loads(down.stdout)["sha256"] == pattern_sha256(100_000)
    bad = subprocess.run(
        [sys.executable, "-m", "nlb_sdn.lab.client", "connections", "127.0.0.1", "--port", str(free_port()), "-n", "2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1 and json.loads(bad.stdout)["errors"] == 2


def test_client_refuses_names_instead_of_resolving():
    with pytest.raises(ValueError):
        run_connections("localhost", 80, count=1)
    with pytest.raises(ValueError):
        download("example.invalid", 80, 1)
    cli = subprocess.run(
        [sys.executable, "-m", "nlb_sdn.lab.client", "download", "localhost"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 2 and "literal IPv4" in cli.stderr


def test_backend_refuses_a_name_as_bind_address():
    proc = subprocess.run(
        [sys.executable, "-m", "nlb_sdn.lab.backend", "--name", "x", "--port", "0", "--bind", "localhost"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1 and "cannot listen" in proc.stderr


def test_two_backends_are_told_apart():
    procs = [start_backend(name) for name in ("h1", "h2")]
    try:
        for (_, port), name in zip(procs, ("h1", "h2"), strict=True):
            assert run_connections("127.0.0.1", port, count=3)["served_by"] == {name: 3}
    finally:
        for proc, _ in procs:
            stop_process(proc)


def test_percentiles_use_nearest_rank():
    assert percentiles([]) == {"p50": None, "p90": None, "p99": None, "max": None}
    values = [float(v) for v in range(1, 101)]
    assert percentiles(values) == {"p50": 50.0, "p90": 90.0, "p99": 99.0, "max": 100.0}
