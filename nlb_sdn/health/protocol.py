"""The H&L message codec (FIG. 15): HMAC-SHA256-signed msgpack envelopes, their verification and TCP framing.

Pure: no sockets and no clock reads except :class:`SequenceCounter`'s default start. A receiver feeds every datagram
(or TCP frame) to :meth:`Verifier.verify`, which never raises: it returns the message, or None after counting the
reason in ``dropped``.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import re
import struct
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack

from nlb_sdn.health.table import CURRENT_STATES, OPS, PROTOCOLS, TARGET_STATES, Row

VERSION = 1
MAC_SIZE = 32
UDP_MAX_SIZE = 1400
TCP_MAX_SIZE = 64 * 1024
MAX_SKEW = 30.0
MAX_ID = 128
MAX_TEXT = 256
MAX_SID = 256
MAX_STYPE = 32
SESSION_TYPE_PATTERN = re.compile(r"[a-z][a-z0-9_]*")
"""A session type (``app``, ``http_cookie``, ``tls_session_id``, ``client_ip``, ...); no ``:``: it is part of a DAM
key (``sess:<type>:<id>``)."""
ENVELOPE_KEYS = frozenset({"v", "type", "src", "seq", "ts", "body"})
DROP_REASONS = ("oversized", "bad_mac", "malformed", "unknown_type", "replayed", "stale")
_FRAME_HEADER = struct.Struct("!I")


def encode(key: bytes, type: str, src: str, seq: int, ts: float, body: dict[str, Any]) -> bytes:
    """One signed message: ``HMAC-SHA256(key, payload) + payload``, the payload a msgpack envelope."""
    payload = msgpack.packb({"v": VERSION, "type": type, "src": src, "seq": seq, "ts": float(ts), "body": body},
                            use_bin_type=True)
    return hmac.new(key, payload, hashlib.sha256).digest() + payload


@dataclass(frozen=True)
class Message:
    """A verified message."""

    type: str
    src: str
    seq: int
    ts: float
    body: dict[str, Any]


FieldCheck = Callable[[Any], bool]


def _ident(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_ID


def _app_id(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_TEXT


def _text(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= MAX_TEXT


def _u32(value: Any) -> bool:
    return type(value) is int and 0 <= value <= 0xFFFFFFFF


def _count(value: Any) -> bool:
    return type(value) is int and 0 <= value < 2**32


def _positive(value: Any) -> bool:
    return type(value) is int and 0 < value < 2**32


def is_ipv4(value: Any) -> bool:
    """An IPv4 address in canonical dotted form."""
    if not isinstance(value, str):
        return False
    try:
        return str(ipaddress.IPv4Address(value)) == value
    except ValueError:
        return False


def is_port(value: Any) -> bool:
    """A TCP/UDP port number (1-65535, an int and not a bool)."""
    return type(value) is int and 1 <= value <= 65535


def _stype(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= MAX_STYPE and SESSION_TYPE_PATTERN.fullmatch(value) is not None


def _sid(value: Any) -> bool:
    """A session id: 1 to 256 bytes of UTF-8, so that a session_up always fits a datagram."""
    if not isinstance(value, str) or not value:
        return False
    try:
        return len(value.encode()) <= MAX_SID
    except UnicodeEncodeError:
        return False


def _ttl(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value) and value > 0


def _lbu_id(value: Any) -> bool:
    return _count(value) or _ident(value)


def _one_of(*allowed: str) -> FieldCheck:
    return lambda value: isinstance(value, str) and value in allowed


def _row(value: Any) -> bool:
    try:
        Row.from_dict(value)
    except (ValueError, TypeError):
        return False
    return True


def _rows(value: Any) -> bool:
    return isinstance(value, list) and all(_row(item) for item in value)


def _current(value: Any) -> bool:
    return isinstance(value, dict) and all(_app_id(k) and v in CURRENT_STATES for k, v in value.items())


def _row_change(body: dict[str, Any]) -> bool:
    """A row (already checked) for add/update whose app_id matches the body's, and no row for a delete."""
    if body["op"] == "delete":
        return "row" not in body
    return "row" in body and Row.from_dict(body["row"]).app_id == body["app_id"]


SCHEMAS: dict[str, tuple[dict[str, FieldCheck], dict[str, FieldCheck], Callable[[dict[str, Any]], bool] | None]] = {
    "heartbeat": ({"host_id": _ident, "checksum": _u32, "row_count": _count, "period_ms": _positive}, {}, None),
    "goodbye": ({"host_id": _ident, "reason": _text}, {}, None),
    "row_change": ({"host_id": _ident, "op": _one_of(*OPS), "app_id": _app_id, "prev_checksum": _u32,
                    "checksum": _u32}, {"row": _row}, _row_change),
    "get_snapshot": ({"lbu_id": _lbu_id, "host_id": _ident, "reason": _text}, {}, None),
    "snapshot": ({"host_id": _ident, "rows": _rows, "checksum": _u32}, {}, None),
    "postulate": ({"from": _ident, "host_id": _ident, "checksum": _u32}, {"current": _current}, None),
    "postulate_wrong": ({"from": _ident, "host_id": _ident, "checksum_actual": _u32}, {}, None),
    "set_target_state": ({"lbu_id": _lbu_id, "app_id": _app_id, "target": _one_of(*TARGET_STATES)}, {}, None),
    "session_up": ({"host_id": _ident, "stype": _stype, "sid": _sid, "vip": is_ipv4, "vport": is_port,
                    "proto": _one_of(*PROTOCOLS), "pip": is_ipv4, "pport": is_port, "client": is_ipv4, "ttl_s": _ttl},
                   {}, None),
    "session_down": ({"host_id": _ident, "stype": _stype, "sid": _sid, "vip": is_ipv4, "vport": is_port,
                      "client": is_ipv4}, {}, None),
}
"""Per message type: required body fields, optional body fields (each with its check) and a whole-body check.
Other body fields are ignored."""
MESSAGE_TYPES = frozenset(SCHEMAS)


def body_ok(type: str, body: dict[str, Any]) -> bool:
    """Whether ``body`` has every required field of ``type`` and every present known field is well typed."""
    required, optional, whole = SCHEMAS[type]
    for name, check in required.items():
        if name not in body or not check(body[name]):
            return False
    for name, check in optional.items():
        if name in body and not check(body[name]):
            return False
    return whole is None or whole(body)


def _envelope(payload: bytes) -> dict[str, Any] | None:
    """The decoded envelope when it is a well-formed version 1 map, else None."""
    try:
        data = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException):
        return None
    if not isinstance(data, dict) or set(data) != ENVELOPE_KEYS:
        return None
    ok = (type(data["v"]) is int and data["v"] == VERSION and isinstance(data["type"], str) and _ident(data["src"])
          and type(data["seq"]) is int and data["seq"] >= 0 and type(data["ts"]) in (int, float)
          and math.isfinite(data["ts"]) and isinstance(data["body"], dict))
    return data if ok else None


class Verifier:
    """Checks size, HMAC, envelope, type, body, sequence and freshness of received messages; counts every outcome."""

    def __init__(self, key: bytes, max_size: int, max_skew: float = MAX_SKEW) -> None:
        """A verifier for messages signed with ``key`` and at most ``max_size`` bytes long."""
        self.key = key
        self.max_size = max_size
        self.max_skew = max_skew
        self.dropped: Counter[str] = Counter()
        self.accepted: Counter[str] = Counter()
        self._last_seq: dict[str, int] = {}

    def verify(self, data: bytes, now: float) -> Message | None:
        """The message in ``data``, or None after counting why it was dropped; never raises, keeps no dropped state."""
        outcome = self._check(data, now)
        if isinstance(outcome, str):
            self.dropped[outcome] += 1
            return None
        self._last_seq[outcome.src] = outcome.seq
        self.accepted[outcome.type] += 1
        return outcome

    def _check(self, data: bytes, now: float) -> Message | str:
        """The message, or the reason to drop it."""
        if len(data) > self.max_size:
            return "oversized"
        mac, payload = bytes(data[:MAC_SIZE]), bytes(data[MAC_SIZE:])
        if len(mac) < MAC_SIZE or not hmac.compare_digest(mac, hmac.new(self.key, payload, hashlib.sha256).digest()):
            return "bad_mac"
        envelope = _envelope(payload)
        if envelope is None:
            return "malformed"
        if envelope["type"] not in MESSAGE_TYPES:
            return "unknown_type"
        if not body_ok(envelope["type"], envelope["body"]):
            return "malformed"
        last = self._last_seq.get(envelope["src"])
        if last is not None and envelope["seq"] <= last:
            return "replayed"
        if abs(now - envelope["ts"]) > self.max_skew:
            return "stale"
        return Message(envelope["type"], envelope["src"], envelope["seq"], float(envelope["ts"]), envelope["body"])


class SequenceCounter:
    """Strictly growing message sequence numbers, starting from the wall clock in microseconds."""

    def __init__(self, start: int | None = None) -> None:
        """A counter whose first number is ``start`` (default: now, in microseconds since the epoch)."""
        self._next = int(time.time() * 1_000_000) if start is None else start

    def next(self) -> int:
        """The next sequence number."""
        value = self._next
        self._next += 1
        return value


def frame(data: bytes) -> bytes:
    """One TCP frame: a 4-byte big-endian length, then ``data`` (at most 64 KiB, else ValueError)."""
    if len(data) > TCP_MAX_SIZE:
        raise ValueError(f"frame of {len(data)} bytes is over {TCP_MAX_SIZE}")
    return _FRAME_HEADER.pack(len(data)) + data


def read_frame(buffer: bytes) -> tuple[bytes | None, bytes]:
    """Split the first complete frame off ``buffer``: ``(frame, rest)``, or ``(None, buffer)`` when incomplete.

    A length prefix over 64 KiB raises ValueError: the stream cannot be trusted any more, close the connection.
    """
    if len(buffer) < _FRAME_HEADER.size:
        return None, buffer
    (size,) = _FRAME_HEADER.unpack_from(buffer)
    if size > TCP_MAX_SIZE:
        raise ValueError(f"frame length {size} is over {TCP_MAX_SIZE}")
    end = _FRAME_HEADER.size + size
    if len(buffer) < end:
        return None, buffer
    return bytes(buffer[_FRAME_HEADER.size:end]), bytes(buffer[end:])
