"""The forwarder pipeline, declared once: tables, priorities and the cookie layout (see docs/pipeline.md)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from enum import IntEnum


class Table(IntEnum):
    """Forwarder tables, in pipeline order."""

    CLASSIFY = 0
    CONNECTIONS = 1
    REVERSE = 2
    FORWARD = 3
    SWITCH_CONNECTIONS = 4
    SWITCH_REVERSE = 5
    SWITCH_SELECT = 6
    TUNNEL = 7
    CT_FORWARD = 8
    CT_REVERSE = 9


class Priority(IntEnum):
    """Flow priorities; within a table, higher wins."""

    MISS = 0
    NEW_CONNECTION = 1
    IPV4 = 10
    FORWARD = 10
    TUNNEL_LABEL = 10
    SWITCH_SYN = 2
    SWITCH_DISPATCH = 100
    CT_REPLY = 190
    CT_AUDIT = 205
    VIP_SYN = 210
    CT_END = 210
    VIP_OTHER = 150
    SESSION = 150
    VIP_SERVICE = 200
    PROBE_REPLY = 250
    CONNECTION = 200
    ARP = 300


class CookieKind(IntEnum):
    """Bits 63-56 of every cookie: which kind of flow it is."""

    BASE = 0x01
    NAT = 0x02
    TUNNEL = 0x03
    SESSION = 0x04
    FABRIC = 0x05


KIND_SHIFT = 56
COOKIE_CACHE_SIZE = 65536
LBU_SHIFT = 48
VIP_SHIFT = 32
KIND_MASK = 0xFF << KIND_SHIFT
LBU_MASK = 0xFF << LBU_SHIFT
VIP_MASK = 0xFFFF << VIP_SHIFT
ENDPOINT_MASK = 0xFFFFFFFF
MAX_VIP_ID = 0xFFFF


@dataclass(frozen=True, slots=True)
class Cookie:
    """A decoded cookie: kind, installing LBU, VIP service id and endpoint id."""

    kind: int
    lbu_id: int
    vip_id: int
    endpoint_id: int

    @classmethod
    def decode(cls, value: int) -> "Cookie":
        """Split a 64-bit cookie into its fields."""
        return cls(
            kind=(value >> KIND_SHIFT) & 0xFF,
            lbu_id=(value >> LBU_SHIFT) & 0xFF,
            vip_id=(value >> VIP_SHIFT) & 0xFFFF,
            endpoint_id=value & ENDPOINT_MASK,
        )


@functools.lru_cache(maxsize=COOKIE_CACHE_SIZE)
def make_cookie(kind: CookieKind, lbu_id: int = 0, vip_id: int = 0, endpoint_id: int = 0) -> int:
    """Pack a 64-bit cookie: kind (63-56), LBU id (55-48), VIP service id (47-32), endpoint id (31-0).

    Cached: every connection to one member carries the same cookie, and sharing one int object instead of making a
    36-byte one per connection keeps the controller's memory per tracked connection down.
    """
    if not 0 <= lbu_id <= 0xFF or not 0 <= vip_id <= MAX_VIP_ID or not 0 <= endpoint_id <= ENDPOINT_MASK:
        raise ValueError(f"cookie field out of range: lbu={lbu_id} vip={vip_id} endpoint={endpoint_id}")
    return (int(kind) << KIND_SHIFT) | (lbu_id << LBU_SHIFT) | (vip_id << VIP_SHIFT) | endpoint_id

