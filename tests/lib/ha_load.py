"""Load for the HA lab test, run inside a Mininet client host: new connections in a loop, each success timed.

``python tests/lib/ha_load.py VIP PORT DURATION`` opens one connection after the other to ``VIP:PORT`` (``GET /``,
``Connection: close``) for ``DURATION`` seconds, each attempt bounded by ``ATTEMPT_TIMEOUT`` (a SYN the switch could
not punt is retried on a new port soon instead of after the kernel's one-second back-off), and prints one JSON line:
the wall-clock times of the successes, and how many attempts failed. Standard library only.
"""

from __future__ import annotations

import itertools
import json
import socket
import sys
import time

ATTEMPT_TIMEOUT = 0.3
"""Seconds one connection attempt (connect, request, response) may take."""
PAUSE = 0.02
"""Seconds between two attempts."""


def attempt(vip: str, port: int) -> bool:
    """One connection with one request; whether a whole response came back."""
    try:
        with socket.create_connection((vip, port), timeout=ATTEMPT_TIMEOUT) as sock:
            sock.sendall(f"GET / HTTP/1.1\r\nHost: {vip}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
            return data.startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def main(argv: list[str]) -> None:
    """Run the loop for the given duration and print the summary."""
    vip, port, duration = argv[0], int(argv[1]), float(argv[2])
    deadline = time.monotonic() + duration
    ok_times: list[float] = []
    failures = 0
    while time.monotonic() < deadline:
        if attempt(vip, port):
            ok_times.append(time.time())
        else:
            failures += 1
        time.sleep(PAUSE)
    print(json.dumps({"ok_times": ok_times, "failures": failures}))


def longest_gap(ok_times: list[float]) -> float:
    """The longest time between two consecutive successes (0 with fewer than two)."""
    return max((later - earlier for earlier, later in itertools.pairwise(sorted(ok_times))), default=0.0)


if __name__ == "__main__":
    main(sys.argv[1:])
