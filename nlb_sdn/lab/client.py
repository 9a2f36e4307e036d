"""Load client for the lab: many new TCP connections (who served each), or one verified pattern download.

Both modes print one JSON line. Targets must be literal IPv4 or IPv6 addresses: the client never resolves names.

- ``nlb-sdn-client connections 10.0.0.100 --port 80 --count 200 --concurrency 10 --timeout 30 [--rate 100]``
- ``nlb-sdn-client download 10.0.0.100 --port 80 --bytes 10000000 [--rate 1000000] --timeout 60``
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import ipaddress
import json
import math
import socket
import sys
import time
from typing import Any

from nlb_sdn import add_version_option
from nlb_sdn.lab.backend import CHUNK, pattern

RESPONSE_LIMIT = 64 * 1024
HEAD_LIMIT = 16 * 1024


def _ipv4(host: str) -> str:
    """The host as a literal IPv4 (or IPv6) address, or ValueError (names are refused: no DNS)."""
    return str(ipaddress.ip_address(host))


def parse_response_head(head: bytes) -> tuple[int, dict[str, str]]:
    """Status code and lower-cased headers of an HTTP response head (without the blank line), or ValueError."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ValueError(f"bad status line {lines[0]!r}")
    headers = {}
    for line in lines[1:]:
        key, sep, value = line.partition(":")
        if sep:
            headers[key.strip().lower()] = value.strip()
    return int(parts[1]), headers


def percentiles(values: list[float]) -> dict[str, float | None]:
    """Nearest-rank p50/p90/p99 and max of ``values`` (None when empty), rounded to 0.001."""
    if not values:
        return {"p50": None, "p90": None, "p99": None, "max": None}
    ordered = sorted(values)

    def rank(q: float) -> float:
        """The nearest-rank ``q`` quantile."""
        return round(ordered[max(0, math.ceil(q * len(ordered)) - 1)], 3)

    return {"p50": rank(0.50), "p90": rank(0.90), "p99": rank(0.99), "max": round(ordered[-1], 3)}


def _error_kind(exc: BaseException) -> str:
    """A short, stable label for a connection failure."""
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ConnectionResetError):
        return "reset"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, asyncio.IncompleteReadError):
        return "eof"
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"os_{exc.errno}"
    return type(exc).__name__


async def _one_connection(host: str, port: int, timeout: float) -> dict[str, Any]:
    """One new connection with one ``GET /`` and ``Connection: close``; returns its outcome."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    outcome: dict[str, Any] = {"ok": False, "connect_ms": None, "served_by": None, "error": None}
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            outcome["connect_ms"] = (loop.time() - started) * 1000
            writer.write(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            data = await reader.read(RESPONSE_LIMIT)
            while not reader.at_eof() and len(data) < RESPONSE_LIMIT:
                data += await reader.read(RESPONSE_LIMIT - len(data))
        head, sep, _body = data.partition(b"\r\n\r\n")
        if not sep:
            raise asyncio.IncompleteReadError(data, None)
        status, headers = parse_response_head(head)
        outcome["served_by"] = headers.get("x-served-by")
        if status != 200 or outcome["served_by"] is None:
            outcome["error"] = f"http_{status}"
        else:
            outcome["ok"] = True
            outcome["request_ms"] = (loop.time() - started) * 1000
    except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
        outcome["error"] = _error_kind(exc)
    finally:
        if writer is not None:
            writer.close()
    return outcome


async def _connections(
    host: str, port: int, count: int, concurrency: int, timeout: float, conn_timeout: float, rate: float | None
) -> dict[str, Any]:
    """Run the connections mode on the running loop."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    deadline = start + timeout
    outcomes: list[dict[str, Any]] = []
    next_index = 0

    async def worker() -> None:
        """Take the next connection index until the count or the deadline is reached."""
        nonlocal next_index
        while next_index < count:
            index = next_index
            next_index += 1
            if rate:
                await asyncio.sleep(max(0.0, start + index / rate - loop.time()))
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            outcomes.append(await _one_connection(host, port, min(conn_timeout, remaining)))

    await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, count)))))
    elapsed = loop.time() - start
    served_by: dict[str, int] = {}
    error_kinds: dict[str, int] = {}
    for outcome in outcomes:
        if outcome["ok"]:
            served_by[outcome["served_by"]] = served_by.get(outcome["served_by"], 0) + 1
        else:
            error_kinds[outcome["error"]] = error_kinds.get(outcome["error"], 0) + 1
    ok = sum(served_by.values())
    return {
        "mode": "connections",
        "target": f"{host}:{port}",
        "requested": count,
        "total": len(outcomes),
        "ok": ok,
        "errors": len(outcomes) - ok,
        "error_kinds": dict(sorted(error_kinds.items())),
        "served_by": dict(sorted(served_by.items())),
        "connect_ms": percentiles([o["connect_ms"] for o in outcomes if o["connect_ms"] is not None]),
        "request_ms": percentiles([o["request_ms"] for o in outcomes if o["ok"]]),
        "elapsed_s": round(elapsed, 3),
        "rate": round(ok / elapsed, 1) if elapsed > 0 else 0.0,
    }


def run_connections(
    host: str,
    port: int = 80,
    count: int = 100,
    concurrency: int = 1,
    timeout: float = 30.0,
    conn_timeout: float = 5.0,
    rate: float | None = None,
) -> dict[str, Any]:
    """Open up to ``count`` new connections (``concurrency`` at a time, paced at ``rate``/s) within ``timeout`` s.

    Each connection sends ``GET /`` with ``Connection: close`` and must finish within ``conn_timeout`` s.
    Returns the summary: total, ok, errors, error_kinds, served_by, connect_ms, request_ms, elapsed_s, rate (ok/s).
    """
    return asyncio.run(_connections(_ipv4(host), port, count, concurrency, timeout, conn_timeout, rate))


def download(
    host: str, port: int = 80, size: int = 1_000_000, rate: int | None = None, timeout: float = 60.0
) -> dict[str, Any]:
    """GET /bytes/<size>[?rate=] on one connection and verify length and content against the backend pattern.

    Returns ``{"ok", "bytes", "expected_bytes", "served_by", "sha256", "elapsed_s", "mbps"}`` plus ``error`` (and
    ``corrupt_at``) on failure; never raises for network errors.
    """
    address = _ipv4(host)
    target = f"/bytes/{size}" + (f"?rate={rate}" if rate else "")
    result: dict[str, Any] = {
        "mode": "download",
        "target": f"{address}:{port}{target}",
        "ok": False,
        "bytes": 0,
        "expected_bytes": size,
        "served_by": None,
        "sha256": None,
        "error": None,
    }
    digest = hashlib.sha256()
    start = time.monotonic()
    deadline = start + timeout
    sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect((address, port))
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n".encode())
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            if len(buffer) > HEAD_LIMIT:
                raise ValueError("response head too large")
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            data = sock.recv(CHUNK)
            if not data:
                raise ConnectionResetError("closed before the response head")
            buffer += data
        head, _sep, rest = buffer.partition(b"\r\n\r\n")
        status, headers = parse_response_head(head)
        result["served_by"] = headers.get("x-served-by")
        if status != 200:
            raise ValueError(f"http_{status}")
        if headers.get("content-length") != str(size):
            raise ValueError(f"content-length {headers.get('content-length')!r} != {size}")
        received = 0
        view = memoryview(bytearray(CHUNK))
        pending = memoryview(rest)
        while received < size:
            if pending:
                n = min(len(pending), CHUNK, size - received)
                view[:n] = pending[:n]
                pending = pending[n:]
            else:
                sock.settimeout(max(0.001, deadline - time.monotonic()))
                n = sock.recv_into(view, min(CHUNK, size - received))
                if not n:
                    raise ConnectionResetError("short transfer")
            if view[:n] != pattern(received, n):
                result["corrupt_at"] = received + next(i for i in range(n) if view[i] != pattern(received, n)[i])
                raise ValueError("corrupt data")
            digest.update(view[:n])
            received += n
            result["bytes"] = received
        result["ok"] = True
    except (OSError, ValueError) as exc:
        result["error"] = str(exc) or type(exc).__name__
        if isinstance(exc, TimeoutError):
            result["error"] = "timeout"
    finally:
        sock.close()
    elapsed = time.monotonic() - start
    result["sha256"] = digest.hexdigest()
    result["elapsed_s"] = round(elapsed, 3)
    result["mbps"] = round(result["bytes"] * 8 / elapsed / 1e6, 3) if elapsed > 0 else 0.0
    return result


def main(argv: list[str] | None = None) -> int:
    """Console entry point: run a mode, print its JSON summary; exit 0 only if everything succeeded."""
    parser = argparse.ArgumentParser(prog="nlb-sdn-client", description=__doc__.splitlines()[0])
    add_version_option(parser)
    modes = parser.add_subparsers(dest="mode", required=True)
    conns = modes.add_parser("connections", help="open many new connections, each GET / with Connection: close")
    conns.add_argument("host", help="literal IPv4 or IPv6 address (VIP or backend)")
    conns.add_argument("--port", type=int, default=80)
    conns.add_argument("--count", "-n", type=int, default=100, help="connections to open (default 100)")
    conns.add_argument("--concurrency", "-c", type=int, default=1, help="connections in flight (default 1)")
    conns.add_argument("--rate", type=float, default=None, help="pace new connections to this many per second")
    conns.add_argument("--timeout", type=float, default=30.0, help="bound on the whole run in seconds")
    conns.add_argument("--conn-timeout", type=float, default=5.0, help="bound on each connection in seconds")
    down = modes.add_parser("download", help="GET /bytes/N over one connection and verify the pattern")
    down.add_argument("host", help="literal IPv4 or IPv6 address (VIP or backend)")
    down.add_argument("--port", type=int, default=80)
    down.add_argument("--bytes", type=int, default=1_000_000, dest="size", help="bytes to fetch")
    down.add_argument("--rate", type=int, default=None, help="ask the server to send this many bytes per second")
    down.add_argument("--timeout", type=float, default=60.0, help="bound on the whole transfer in seconds")
    args = parser.parse_args(argv)
    try:
        _ipv4(args.host)
    except ValueError:
        parser.error(f"host must be a literal IPv4 or IPv6 address, got {args.host!r}")
    if args.mode == "connections":
        summary = run_connections(
            args.host, args.port, args.count, args.concurrency, args.timeout, args.conn_timeout, args.rate
        )
        success = summary["errors"] == 0 and summary["total"] == args.count
    else:
        summary = download(args.host, args.port, args.size, args.rate, args.timeout)
        success = summary["ok"]
    print(json.dumps(summary, sort_keys=False), flush=True)
    return 0 if success else 1


if __name__ == "__main__":
    sys.exit(main())
