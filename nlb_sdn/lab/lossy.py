"""A lossy link for the lab, where the kernel has no netem: relays Ethernet frames between two interfaces, dropping
each one with a given probability (both directions, bounded in time).

``python -m nlb_sdn.lab.lossy --a r1-eth0 --b r1-out --loss 0.05 --seconds 120`` inside a host's namespace, with
``Lab.make_lossy(host, loss)`` doing the plumbing: the host's address moves to a new veth ``<host>-in`` whose peer
``<host>-out`` is relayed to the old interface, so every frame on the host's link crosses this relay.
"""

from __future__ import annotations

import argparse
import random
import select
import signal
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable

ETH_P_ALL = 0x0003
MAX_FRAME = 65535


def open_raw(interface: str) -> socket.socket:
    """A raw socket that sees every frame arriving on ``interface`` and can send frames out of it."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((interface, 0))
    sock.setblocking(False)
    return sock


def relay(
    a: str, b: str, loss: float, seconds: float, seed: int | None = None, stopped: Callable[[], bool] = lambda: False
) -> Counter[str]:
    """Relay frames between interfaces ``a`` and ``b`` for ``seconds`` (or until ``stopped()``), dropping each with
    probability ``loss``."""
    rng = random.Random(seed)
    sockets = {a: open_raw(a), b: open_raw(b)}
    peer = {a: b, b: a}
    counts: Counter[str] = Counter()
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0 and not stopped():
        ready, _, _ = select.select(list(sockets.values()), [], [], min(left, 0.5))
        for sock in ready:
            name = next(n for n, s in sockets.items() if s is sock)
            try:
                frame, address = sock.recvfrom(MAX_FRAME)
            except BlockingIOError:
                continue
            if address[2] == socket.PACKET_OUTGOING:
                continue
            if rng.random() < loss:
                counts[f"dropped_from_{name}"] += 1
                continue
            try:
                sockets[peer[name]].send(frame)
                counts[f"relayed_from_{name}"] += 1
            except OSError:
                counts["send_errors"] += 1
    return counts


def main(argv: list[str] | None = None) -> int:
    """Entry point: relay until the time is up, then print the counts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", required=True, help="one interface")
    parser.add_argument("--b", required=True, help="the other interface")
    parser.add_argument("--loss", type=float, required=True, help="drop probability per frame, 0 to 1")
    parser.add_argument("--seconds", type=float, default=120.0, help="how long to relay (bounded)")
    args = parser.parse_args(argv)
    if not 0.0 <= args.loss < 1.0:
        parser.error("--loss must be in [0, 1)")
    print(f"relaying {args.a} <-> {args.b} with loss {args.loss}", flush=True)
    stop: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: stop.append(signum))
    counts = relay(args.a, args.b, args.loss, args.seconds, stopped=lambda: bool(stop))
    print(dict(counts), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
