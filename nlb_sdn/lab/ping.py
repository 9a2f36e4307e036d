"""A bounded ICMP echo client for the lab, whose hosts may have no ``ping``: prints one JSON line.

``python -m nlb_sdn.lab.ping 10.0.0.100 --count 3 --interval 0.2 --timeout 2`` sends ``count`` echo requests over a
raw socket (root, as every lab host runs) and counts the echo replies from that address, each awaited at most
``timeout`` seconds. Exit status 0 when every request was answered.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import sys
import time
from typing import Any

from nlb_sdn import add_version_option
from nlb_sdn.core.frames import internet_checksum

ECHO_REQUEST, ECHO_REPLY = 8, 0
ECHO_HEADER = struct.Struct("!BBHHH")
PAYLOAD = bytes(range(56))
RECEIVE_SIZE = 65535


def echo_request(ident: int, seq: int) -> bytes:
    """An ICMP echo request with 56 bytes of data, its checksum set."""
    message = bytearray(ECHO_HEADER.pack(ECHO_REQUEST, 0, 0, ident, seq) + PAYLOAD)
    struct.pack_into("!H", message, 2, internet_checksum(bytes(message)))
    return bytes(message)


def _await_reply(sock: socket.socket, address: str, ident: int, seq: int, timeout: float) -> float | None:
    """Seconds until the echo reply to (``ident``, ``seq``) came from ``address``, or None after ``timeout``."""
    sent = time.monotonic()
    deadline = sent + timeout
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            packet, (source, _) = sock.recvfrom(RECEIVE_SIZE)
        except TimeoutError:
            return None
        header = (packet[0] & 0x0F) * 4
        if source != address or len(packet) < header + ECHO_HEADER.size:
            continue
        kind, _code, _checksum, got_ident, got_seq = ECHO_HEADER.unpack_from(packet, header)
        if (kind, got_ident, got_seq) == (ECHO_REPLY, ident, seq):
            return time.monotonic() - sent
    return None


def ping(address: str, count: int = 3, interval: float = 0.2, timeout: float = 2.0) -> dict[str, Any]:
    """Send ``count`` echo requests to ``address``; how many were answered and their round trips in ms."""
    ident = os.getpid() & 0xFFFF
    rtts: list[float] = []
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        for seq in range(1, count + 1):
            sock.sendto(echo_request(ident, seq), (address, 0))
            rtt = _await_reply(sock, address, ident, seq, timeout)
            if rtt is not None:
                rtts.append(round(rtt * 1000, 3))
            if seq < count:
                time.sleep(interval)
    return {"mode": "ping", "target": address, "sent": count, "received": len(rtts), "rtt_ms": rtts}


def main(argv: list[str] | None = None) -> int:
    """Command line: ping an address, print the JSON summary."""
    parser = argparse.ArgumentParser(prog="nlb-sdn-ping", description=__doc__.splitlines()[0])
    add_version_option(parser)
    parser.add_argument("address", help="literal IPv4 address")
    parser.add_argument("--count", type=int, default=3)
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between requests")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for each reply")
    args = parser.parse_args(argv)
    summary = ping(str(socket.inet_ntoa(socket.inet_aton(args.address))), args.count, args.interval, args.timeout)
    print(json.dumps(summary), flush=True)
    return 0 if summary["received"] == summary["sent"] else 1


if __name__ == "__main__":
    sys.exit(main())
