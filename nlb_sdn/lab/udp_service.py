"""A DNS-like UDP service for the lab: a responder on the backends, and the clients of the UDP lab tests.

``serve`` answers every datagram with ``<name> <datagram>`` from the port it came to. ``query`` sends ``--count``
requests, each from a fresh socket (a fresh source port: a new flow to the VIP; with ``--sport P`` the ports P, P+1,
... so that no two requests share a flow), and counts who answered. ``stream``
sends one datagram every ``--interval`` seconds from one socket (one long-lived flow) for ``--duration`` seconds and
counts who answered each. Both clients print one JSON summary line; every wait is bounded by ``--timeout``.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
from collections import Counter
from functools import partial
from typing import TYPE_CHECKING, Any

from nlb_sdn.lab.commands import wait_for

if TYPE_CHECKING:
    from nlb_sdn.lab.harness import Lab

MAX_DATAGRAM = 2048
MODULE = "nlb_sdn.lab.udp_service"


def start_responders(lab: Lab, port: int, timeout: float = 10.0) -> dict[str, subprocess.Popen[bytes]]:
    """Start ``serve`` on every backend of ``lab`` (stopped by PID at teardown) and wait until each listens; the
    processes by backend (``lab.stop_process`` stops one earlier)."""
    procs = {}
    for name in lab.topo.backends:
        cmd = [sys.executable, "-m", MODULE, "serve", name, str(port)]
        procs[name] = lab.start_process(name, cmd, f"udp-{name}-{port}.log")
        wait_for(partial(_listening, lab, name, port), timeout, 0.05, f"the UDP responder of {name} on port {port}")
    return procs


def _listening(lab: Lab, name: str, port: int) -> bool:
    """Whether something in host ``name`` listens on UDP ``port``."""
    return bool(lab.host_run(name, ["ss", "-lunH", f"sport = :{port}"], timeout=5.0).stdout.strip())


def start_client(lab: Lab, client: str, args: list[Any]) -> subprocess.Popen[bytes]:
    """Start a ``query`` or ``stream`` client in host ``client`` (its summary: ``lab.collect_client``)."""
    proc = lab.host(client).popen(
        [sys.executable, "-m", MODULE, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    lab.client_procs.append(proc)
    return proc


def serve(name: str, port: int) -> None:
    """Answer each datagram to ``port`` with ``<name> <datagram>`` (a request/response service), until killed."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("0.0.0.0", port))
        prefix = name.encode() + b" "
        while True:
            data, address = sock.recvfrom(MAX_DATAGRAM)
            sock.sendto(prefix + data, address)


def ask(sock: socket.socket, address: tuple[str, int], request: bytes, timeout: float) -> str | None:
    """Send ``request`` and wait up to ``timeout`` s for its answer; the answering member's name, or None."""
    sock.settimeout(timeout)
    sock.sendto(request, address)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = sock.recv(MAX_DATAGRAM)
        except (TimeoutError, OSError):
            return None
        name, _, echoed = data.partition(b" ")
        if echoed == request:
            return name.decode(errors="replace")
    return None


def query(address: tuple[str, int], count: int, timeout: float, sport: int = 0) -> dict[str, Any]:
    """``count`` requests, each a new flow (its own socket, so its own source port: ``sport`` + its index, or any
    free one when ``sport`` is 0): who answered, how many lost."""
    served: Counter[str] = Counter()
    lost = 0
    for index in range(count):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("0.0.0.0", sport + index if sport else 0))
            member = ask(sock, address, f"query {index}".encode(), timeout)
        if member is None:
            lost += 1
        else:
            served[member] += 1
    return {"ok": sum(served.values()), "lost": lost, "served_by": dict(served)}


def stream(address: tuple[str, int], duration: float, interval: float, timeout: float) -> dict[str, Any]:
    """One flow (one socket, one source port) sending a request every ``interval`` s for ``duration`` s."""
    served: Counter[str] = Counter()
    lost = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("0.0.0.0", 0))
        port = sock.getsockname()[1]
        end = time.monotonic() + duration
        index = 0
        while time.monotonic() < end:
            member = ask(sock, address, f"stream {index}".encode(), timeout)
            if member is None:
                lost += 1
            else:
                served[member] += 1
            index += 1
            time.sleep(interval)
    return {"ok": sum(served.values()), "lost": lost, "served_by": dict(served), "port": port}


def main(argv: list[str] | None = None) -> None:
    """``serve NAME PORT``, ``query ADDRESS PORT --count N`` or ``stream ADDRESS PORT --duration S``."""
    parser = argparse.ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    server = commands.add_parser("serve")
    server.add_argument("name")
    server.add_argument("port", type=int)
    for name in ("query", "stream"):
        client = commands.add_parser(name)
        client.add_argument("address")
        client.add_argument("port", type=int)
        client.add_argument("--timeout", type=float, default=1.0)
        client.add_argument("--count", type=int, default=100)
        client.add_argument("--sport", type=int, default=0)
        client.add_argument("--duration", type=float, default=10.0)
        client.add_argument("--interval", type=float, default=0.05)
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args.name, args.port)
        return
    address = (args.address, args.port)
    if args.command == "query":
        summary = query(address, args.count, args.timeout, args.sport)
    else:
        summary = stream(address, args.duration, args.interval, args.timeout)
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
