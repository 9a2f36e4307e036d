"""Signed messages, shared by H&L (``nlb_sdn.health.protocol``) and migration (``nlb_sdn.migration.wire``).

Keys (one per host: derived from the deployment's master key, or listed), HMAC-SHA256-signed msgpack envelopes that
name their key (``kid``), their verification (size, key by kid, MAC in constant time, envelope, sender bound to its
key, type and body, sequence against replay, timestamp against staleness), sequence numbers, and the 4-byte length
framing of messages over TCP. Each protocol brings its own message types as a map of body checks.

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
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

import msgpack

MIN_KEY_SIZE = 16
VERSION = 1
MAC_SIZE = 32
TCP_MAX_SIZE = 64 * 1024
"""Largest message in a TCP frame."""
MAX_SKEW = 30.0
MAX_ID = 128
ENVELOPE_KEYS = frozenset({"v", "kid", "type", "src", "seq", "ts", "body"})
DROP_REASONS = ("oversized", "unknown_kid", "bad_mac", "malformed", "wrong_src", "unknown_type", "replayed", "stale")
HOST_KEY_LABEL = b"nlb-sdn host-key v1\0"
"""What a host key derivation hashes before the host id (domain separation from every other use of the master)."""
FRAME_HEADER = struct.Struct("!I")

BodyCheck = Callable[[dict[str, Any]], bool]
"""Whether a message body is well formed for its type."""


def load_key(path: str | os.PathLike[str]) -> bytes:
    """A key file: the file's bytes without surrounding ASCII whitespace; raise ValueError if too short."""
    with open(path, "rb") as handle:
        key = handle.read().strip()
    if len(key) < MIN_KEY_SIZE:
        raise ValueError(f"key is {len(key)} bytes, at least {MIN_KEY_SIZE} are needed")
    return key


def derive_host_key(master: bytes, host_id: str) -> bytes:
    """The key of host ``host_id``: ``HMAC-SHA256(master, HOST_KEY_LABEL + host_id)``, as 64 hex characters."""
    return hmac.new(master, HOST_KEY_LABEL + host_id.encode(), hashlib.sha256).hexdigest().encode()


def load_key_list(path: str | os.PathLike[str]) -> dict[str, bytes]:
    """A listed key file: one ``HOST_ID KEY`` per line (``#`` comments, blank lines); ValueError naming the line."""
    keys: dict[str, bytes] = {}
    with open(path, "rb") as handle:
        lines = handle.read().decode("utf-8", errors="strict").splitlines()
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        parts = text.split()
        if len(parts) != 2 or not is_ident(parts[0]) or len(parts[1]) < MIN_KEY_SIZE or parts[0] in keys:
            raise ValueError(f"line {number}: expected a new HOST_ID and a key of at least {MIN_KEY_SIZE} bytes")
        keys[parts[0]] = parts[1].encode()
    return keys


class KeyMode(StrEnum):
    """What the controller's key file (``controller.health.key_file``) holds."""

    DERIVED = "derived"
    """The deployment's master key: each host's key is derived from it (:func:`derive_host_key`)."""
    LISTED = "listed"
    """A key list: one ``HOST_ID KEY`` per line (:func:`load_key_list`)."""
    SHARED = "shared"
    """One key that every host holds and signs with (the old scheme, for upgrades: any host can act as any other)."""


def load_key_ring(mode: KeyMode, path: str | os.PathLike[str]) -> KeyRing:
    """The controller's key ring from its key file read as ``mode`` says; ValueError (or OSError) if unusable."""
    if mode == KeyMode.LISTED:
        return ListedKeys(load_key_list(path))
    key = load_key(path)
    return DerivedKeys(key) if mode == KeyMode.DERIVED else SharedKey(key)


class KeyRing(Protocol):
    """Where a verifier finds the key a message names (``kid``)."""

    def key_for(self, kid: str) -> bytes | None:
        """The key called ``kid``, or None when this ring has no such key."""


@dataclass(frozen=True)
class DerivedKeys:
    """Every host's key, derived from the deployment's master key (the controller's ring)."""

    master: bytes

    def key_for(self, kid: str) -> bytes | None:
        """The derived key of host ``kid``."""
        return derive_host_key(self.master, kid) if is_ident(kid) else None


@dataclass(frozen=True)
class ListedKeys:
    """The keys of a listed key file, by host id (the controller's ring when keys are not derived)."""

    keys: Mapping[str, bytes]

    def key_for(self, kid: str) -> bytes | None:
        """The listed key of host ``kid``, if any."""
        return self.keys.get(kid)


@dataclass(frozen=True)
class OneKey:
    """One key under one id: a host's own key (an agent's ring), or a migration's channel key."""

    kid: str
    key: bytes

    def key_for(self, kid: str) -> bytes | None:
        """The key when ``kid`` is its id."""
        return self.key if hmac.compare_digest(kid.encode(), self.kid.encode()) else None


def encode(key: bytes, type: str, src: str, seq: int, ts: float, body: dict[str, Any], kid: str | None = None) -> bytes:
    """One signed message: ``HMAC-SHA256(key, payload) + payload``, the payload a msgpack envelope naming its key
    ``kid`` (default: ``src``, a host signing with its own key)."""
    envelope = {"v": VERSION, "kid": src if kid is None else kid, "type": type, "src": src, "seq": seq}
    payload = msgpack.packb({**envelope, "ts": float(ts), "body": body}, use_bin_type=True)
    return hmac.new(key, payload, hashlib.sha256).digest() + payload


@dataclass(frozen=True)
class Message:
    """A verified message."""

    type: str
    src: str
    seq: int
    ts: float
    body: dict[str, Any]
    kid: str = field(default="", compare=False)
    """The id of the key that signed it."""


def is_ident(value: Any) -> bool:
    """An identifier (a message source, a host id): a non-empty string of at most :data:`MAX_ID` characters."""
    return isinstance(value, str) and 0 < len(value) <= MAX_ID


@dataclass(frozen=True)
class SharedKey:
    """One key for every id: the single deployment key of old (``health.key_mode: shared``); any holder can sign as
    any host, so it is only for upgrading a deployment."""

    key: bytes

    def key_for(self, kid: str) -> bytes | None:
        """The shared key, whatever ``kid`` says."""
        return self.key


def _envelope(payload: bytes) -> dict[str, Any] | None:
    """The decoded envelope when it is a well-formed version 1 map, else None."""
    data = _unpack(payload)
    if not isinstance(data, dict) or set(data) != ENVELOPE_KEYS:
        return None
    ok = (
        type(data["v"]) is int
        and data["v"] == VERSION
        and is_ident(data["kid"])
        and isinstance(data["type"], str)
        and is_ident(data["src"])
        and type(data["seq"]) is int
        and data["seq"] >= 0
        and type(data["ts"]) in (int, float)
        and math.isfinite(data["ts"])
        and isinstance(data["body"], dict)
    )
    return data if ok else None


def _unpack(payload: bytes) -> Any:
    """The msgpack object in ``payload``, or None when it is not one."""
    try:
        return msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException):
        return None


def _kid(payload: bytes) -> str:
    """The key id an unverified payload names, or "" when it names none (only a :class:`SharedKey` has a key then)."""
    data = _unpack(payload)
    kid = data.get("kid") if isinstance(data, dict) else None
    return kid if isinstance(kid, str) and is_ident(kid) else ""


class SignedVerifier:
    """Checks size, key, HMAC, envelope, sender, type, body, sequence and freshness of received messages; counts every
    outcome.

    ``keys`` finds the key each message names (``kid``); a bare ``bytes`` key is a :class:`SharedKey`. With
    ``bind_src`` (the controller's side) a message must come from the host whose key signed it (``src == kid``), so
    that a host can speak only as itself. ``body_checks`` names the message types this receiver accepts, each with
    the check of its body; any other type is dropped as ``unknown_type``. With ``ordered`` each sender's sequence
    numbers must grow (``replayed`` otherwise).
    """

    def __init__(
        self,
        keys: KeyRing | bytes,
        max_size: int,
        body_checks: Mapping[str, BodyCheck],
        max_skew: float = MAX_SKEW,
        bind_src: bool = True,
        ordered: bool = True,
    ) -> None:
        """A verifier for messages signed with a key of ``keys``, at most ``max_size`` bytes long, of the types
        given."""
        self.keys: KeyRing = SharedKey(keys) if isinstance(keys, bytes) else keys
        self.max_size = max_size
        self.max_skew = max_skew
        self.body_checks = body_checks
        self.bind_src = bind_src
        self.ordered = ordered
        self.dropped: Counter[str] = Counter()
        self.accepted: Counter[str] = Counter()
        self._last_seq: dict[str, int] = {}

    def verify(self, data: bytes, now: float) -> Message | None:
        """The message in ``data``, or None after counting why it was dropped; never raises, keeps no dropped state."""
        outcome = self._check(data, now)
        if isinstance(outcome, str):
            self.dropped[outcome] += 1
            return None
        if self.ordered:
            self._last_seq[outcome.src] = outcome.seq
        self.accepted[outcome.type] += 1
        return outcome

    def _check(self, data: bytes, now: float) -> Message | str:
        """The message, or the reason to drop it."""
        if len(data) > self.max_size:
            return "oversized"
        mac, payload = bytes(data[:MAC_SIZE]), bytes(data[MAC_SIZE:])
        kid = _kid(payload)
        key = self.keys.key_for(kid)
        if key is None:
            return "unknown_kid" if kid else "bad_mac"
        if len(mac) < MAC_SIZE or not hmac.compare_digest(mac, hmac.new(key, payload, hashlib.sha256).digest()):
            return "bad_mac"
        envelope = _envelope(payload)
        if envelope is None:
            return "malformed"
        if self.bind_src and envelope["src"] != kid:
            return "wrong_src"
        body_check = self.body_checks.get(envelope["type"])
        if body_check is None:
            return "unknown_type"
        if not body_check(envelope["body"]):
            return "malformed"
        last = self._last_seq.get(envelope["src"])
        if self.ordered and last is not None and envelope["seq"] <= last:
            return "replayed"
        if abs(now - envelope["ts"]) > self.max_skew:
            return "stale"
        return Message(envelope["type"], envelope["src"], envelope["seq"], float(envelope["ts"]), envelope["body"], kid)


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
