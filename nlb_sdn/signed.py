"""Signed messages, shared by H&L (``nlb_sdn.health.protocol``) and migration (``nlb_sdn.migration.wire``).

The deployment key, HMAC-SHA256-signed msgpack envelopes, their verification (size, MAC in constant time, envelope,
type and body, sequence against replay, timestamp against staleness), sequence numbers, and the 4-byte length framing
of messages over TCP. Each protocol brings its own message types as a map of body checks.

Pure: no sockets and no clock reads except :class:`SequenceCounter`'s default start. A receiver feeds every datagram
(or TCP frame) to :meth:`SignedVerifier.verify`, which never raises: it returns the message, or None after counting
the reason in ``dropped``.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import struct
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgpack

MIN_KEY_SIZE = 16
VERSION = 1
MAC_SIZE = 32
TCP_MAX_SIZE = 64 * 1024
"""Largest message in a TCP frame."""
MAX_SKEW = 30.0
MAX_ID = 128
ENVELOPE_KEYS = frozenset({"v", "type", "src", "seq", "ts", "body"})
DROP_REASONS = ("oversized", "bad_mac", "malformed", "unknown_type", "replayed", "stale")
FRAME_HEADER = struct.Struct("!I")

BodyCheck = Callable[[dict[str, Any]], bool]
"""Whether a message body is well formed for its type."""


def load_key(path: str | os.PathLike[str]) -> bytes:
    """The deployment key: the file's bytes without surrounding ASCII whitespace; raise ValueError if too short."""
    with open(path, "rb") as handle:
        key = handle.read().strip()
    if len(key) < MIN_KEY_SIZE:
        raise ValueError(f"key is {len(key)} bytes, at least {MIN_KEY_SIZE} are needed")
    return key


def encode(key: bytes, type: str, src: str, seq: int, ts: float, body: dict[str, Any]) -> bytes:
    """One signed message: ``HMAC-SHA256(key, payload) + payload``, the payload a msgpack envelope."""
    payload = msgpack.packb(
        {"v": VERSION, "type": type, "src": src, "seq": seq, "ts": float(ts), "body": body}, use_bin_type=True
    )
    return hmac.new(key, payload, hashlib.sha256).digest() + payload


@dataclass(frozen=True)
class Message:
    """A verified message."""

    type: str
    src: str
    seq: int
    ts: float
    body: dict[str, Any]


def is_ident(value: Any) -> bool:
    """An identifier (a message source, a host id): a non-empty string of at most :data:`MAX_ID` characters."""
    return isinstance(value, str) and 0 < len(value) <= MAX_ID


def _envelope(payload: bytes) -> dict[str, Any] | None:
    """The decoded envelope when it is a well-formed version 1 map, else None."""
    try:
        data = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException):
        return None
    if not isinstance(data, dict) or set(data) != ENVELOPE_KEYS:
        return None
    ok = (
        type(data["v"]) is int
        and data["v"] == VERSION
        and isinstance(data["type"], str)
        and is_ident(data["src"])
        and type(data["seq"]) is int
        and data["seq"] >= 0
        and type(data["ts"]) in (int, float)
        and math.isfinite(data["ts"])
        and isinstance(data["body"], dict)
    )
    return data if ok else None


class SignedVerifier:
    """Checks size, HMAC, envelope, type, body, sequence and freshness of received messages; counts every outcome.

    ``body_checks`` names the message types this receiver accepts, each with the check of its body; any other type is
    dropped as ``unknown_type``.
    """

    def __init__(
        self, key: bytes, max_size: int, body_checks: Mapping[str, BodyCheck], max_skew: float = MAX_SKEW
    ) -> None:
        """A verifier for messages signed with ``key``, at most ``max_size`` bytes long, of the types given."""
        self.key = key
        self.max_size = max_size
        self.max_skew = max_skew
        self.body_checks = body_checks
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
        body_check = self.body_checks.get(envelope["type"])
        if body_check is None:
            return "unknown_type"
        if not body_check(envelope["body"]):
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
    return FRAME_HEADER.pack(len(data)) + data


def read_frame(buffer: bytes) -> tuple[bytes | None, bytes]:
    """Split the first complete frame off ``buffer``: ``(frame, rest)``, or ``(None, buffer)`` when incomplete.

    A length prefix over 64 KiB raises ValueError: the stream cannot be trusted any more, close the connection.
    """
    if len(buffer) < FRAME_HEADER.size:
        return None, buffer
    (size,) = FRAME_HEADER.unpack_from(buffer)
    if size > TCP_MAX_SIZE:
        raise ValueError(f"frame length {size} is over {TCP_MAX_SIZE}")
    end = FRAME_HEADER.size + size
    if len(buffer) < end:
        return None, buffer
    return bytes(buffer[FRAME_HEADER.size : end]), bytes(buffer[end:])
