"""An OpenFlow 1.3 role request sent to an Open vSwitch bridge over its management socket, for fencing tests.

The bridge's ``<rundir>/<bridge>.mgmt`` Unix socket takes OpenFlow connections of its own; a role request there is
judged by the same generation rule as the controllers' (OVS keeps one largest generation id per bridge), so a test can
replay a dead master's MASTER request and see the switch refuse it.
"""

from __future__ import annotations

import socket
import struct

OFP_VERSION = 4
OFPT_HELLO, OFPT_ERROR, OFPT_ROLE_REQUEST, OFPT_ROLE_REPLY = 0, 1, 24, 25
OFPCR_ROLE_MASTER = 2
HEADER = struct.Struct("!BBHI")
OVS_RUNDIR = "/var/run/openvswitch"


def _read_message(sock: socket.socket) -> tuple[int, bytes]:
    """One OpenFlow message: its type and body."""
    head = b""
    while len(head) < HEADER.size:
        chunk = sock.recv(HEADER.size - len(head))
        if not chunk:
            raise ConnectionError("the switch closed the connection")
        head += chunk
    _version, kind, length, _xid = HEADER.unpack(head)
    body = b""
    while len(body) < length - HEADER.size:
        chunk = sock.recv(length - HEADER.size - len(body))
        if not chunk:
            raise ConnectionError("the switch closed the connection")
        body += chunk
    return kind, body


def master_request(bridge: str, generation: int, timeout: float = 5.0) -> tuple[str, int, int]:
    """Ask ``bridge`` for the MASTER role with ``generation``: ``("error", type, code)`` or ``("reply", role,
    generation)``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(f"{OVS_RUNDIR}/{bridge}.mgmt")
        sock.sendall(HEADER.pack(OFP_VERSION, OFPT_HELLO, HEADER.size, 1))
        body = struct.pack("!I4xQ", OFPCR_ROLE_MASTER, generation)
        sock.sendall(HEADER.pack(OFP_VERSION, OFPT_ROLE_REQUEST, HEADER.size + len(body), 2) + body)
        for _ in range(16):
            kind, body = _read_message(sock)
            if kind == OFPT_ERROR:
                error_type, code = struct.unpack_from("!HH", body)
                return "error", error_type, code
            if kind == OFPT_ROLE_REPLY:
                role, _pad, granted = struct.unpack_from("!I4sQ", body)
                return "reply", role, granted
    raise AssertionError(f"{bridge}: no answer to the role request")
