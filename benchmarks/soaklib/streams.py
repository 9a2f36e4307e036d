"""Run in a lab host: long-lived paced downloads that must carry data the whole time; one JSON line at the end.

``python streams.py --target 10.0.0.100:80 --target 10.0.0.101:80 --count 2 --bytes 9000000 --rate 10000
--stall 10 --timeout 1000``: ``--count`` streams per target, each a thread that sends ``GET /bytes/N?rate=R`` and
checks every byte against the backend's pattern as it arrives. A stream records its longest gap between two
receipts; it ends as ``stalled`` when nothing arrives for ``--stall`` seconds, as an error when the connection is
reset, closed early or carries a wrong byte, and ``ok`` when every byte arrived. Each stream is bounded by
``--timeout``.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time
from typing import Any

from nlb_sdn.lab.backend import CHUNK, pattern
from nlb_sdn.lab.client import HEAD_LIMIT, parse_response_head


def read_head(sock: socket.socket) -> tuple[dict[str, str], bytes]:
    """The response's headers (status 200 required) and the body bytes that came with the head."""
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        if len(buffer) > HEAD_LIMIT:
            raise ValueError("response head too large")
        data = sock.recv(CHUNK)
        if not data:
            raise ConnectionResetError("closed before the response head")
        buffer += data
    head, _sep, rest = buffer.partition(b"\r\n\r\n")
    status, headers = parse_response_head(head)
    if status != 200:
        raise ValueError(f"http_{status}")
    return headers, rest


def stream(host: str, port: int, size: int, rate: int, stall: float, timeout: float, out: dict[str, Any]) -> None:
    """One paced download into ``out``: bytes, longest gap, outcome (``ok``, ``stalled`` or an error), times."""
    out.update(started=time.time(), bytes=0, max_gap_s=0.0, outcome=None, served_by=None)
    deadline = time.monotonic() + timeout
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.settimeout(stall)
        sock.connect((host, port))
        sock.sendall(f"GET /bytes/{size}?rate={rate} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        headers, pending = read_head(sock)
        out["served_by"] = headers.get("x-served-by")
        received, last = 0, time.monotonic()
        while received < size:
            if time.monotonic() > deadline:
                raise ValueError("deadline passed")
            data = pending if pending else sock.recv(CHUNK)
            pending = b""
            now = time.monotonic()
            out["max_gap_s"] = round(max(out["max_gap_s"], now - last), 3)
            last = now
            if not data:
                raise ConnectionResetError("closed early")
            data = data[: size - received]
            for offset in range(0, len(data), CHUNK):
                piece = data[offset : offset + CHUNK]
                if piece != pattern(received + offset, len(piece)):
                    raise ValueError("corrupt data")
            received += len(data)
            out["bytes"] = received
        out["outcome"] = "ok"
    except TimeoutError:
        out["outcome"] = "stalled"
    except (OSError, ValueError) as exc:
        out["outcome"] = f"error: {exc or type(exc).__name__}"
    finally:
        sock.close()
        out["ended"] = time.time()


def main(argv: list[str] | None = None) -> int:
    """Start every stream, wait for all (each bounded by ``--timeout``), print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", action="append", required=True, help="literal IPv4 address:port (repeatable)")
    parser.add_argument("--count", type=int, default=1, help="streams per target")
    parser.add_argument("--bytes", type=int, required=True, dest="size")
    parser.add_argument("--rate", type=int, required=True, help="bytes per second the backend sends")
    parser.add_argument("--stall", type=float, default=10.0, help="seconds without data that count as a stall")
    parser.add_argument("--timeout", type=float, required=True, help="bound on each stream in seconds")
    args = parser.parse_args(argv)
    results: list[dict[str, Any]] = []
    threads = []
    for target in args.target:
        host, _sep, port = target.rpartition(":")
        for _ in range(args.count):
            out: dict[str, Any] = {"target": target}
            results.append(out)
            threads.append(
                threading.Thread(
                    target=stream, args=(host, int(port), args.size, args.rate, args.stall, args.timeout, out)
                )
            )
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(args.timeout + 5.0)
    print(json.dumps({"streams": results}), flush=True)
    return 0 if all(r.get("outcome") == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
