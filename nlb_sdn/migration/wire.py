"""The migration messages: H&L-signed envelopes (``protocol.encode``) in H&L TCP frames, and their verification.

A migration runs over one TCP connection from the router to the host's migration port (7001):
``migrate`` (router → host, the connection state), ``migrate_reply`` (host → router, after the restore and again after
the hand-off), then ``migrate_go`` or ``migrate_abort`` (router → host). Every message is signed with the H&L key.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable
from typing import Any

import msgpack

from nlb_sdn.health.protocol import (
    MAC_SIZE,
    MAX_SKEW,
    TCP_MAX_SIZE,
    Message,
    SequenceCounter,
    Verifier,
    encode,
    frame,
    read_frame,
)

MIGRATION_PORT = 7001
MAX_MESSAGE_SIZE = TCP_MAX_SIZE
"""Largest signed message, state blob included (the H&L TCP frame limit, 64 KiB)."""
MIGRATE = "migrate"
REPLY = "migrate_reply"
GO = "migrate_go"
ABORT = "migrate_abort"
STAGES = ("restore", "handoff")
MAX_TEXT = 256
MIGRATION_ID_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_READ_SIZE = 65536


class WireError(ValueError):
    """A migration message that was rejected; ``reason`` is a short code (``bad_mac``, ``malformed``, ...)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def _migration_id(value: Any) -> bool:
    return isinstance(value, str) and MIGRATION_ID_PATTERN.fullmatch(value) is not None


def _text(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= MAX_TEXT


BODY_CHECKS: dict[str, dict[str, Callable[[Any], bool]]] = {
    MIGRATE: {"id": _migration_id, "state": lambda value: isinstance(value, dict)},
    REPLY: {"id": _migration_id, "ok": lambda value: isinstance(value, bool),
            "stage": lambda value: value in STAGES, "error": _text},
    GO: {"id": _migration_id},
    ABORT: {"id": _migration_id, "reason": _text},
}
"""Required body fields of each migration message type and their checks (the state map is checked by
``ConnectionState.from_dict``)."""


class MigrationVerifier(Verifier):
    """The H&L :class:`Verifier` (size, HMAC, envelope, sequence, freshness) for the migration message types.

    The parent checks size, MAC and envelope and then stops at ``unknown_type``, because its schemas hold only the
    H&L types; this class carries on from there with :data:`BODY_CHECKS`. H&L messages are refused here.
    """

    def __init__(self, key: bytes, max_size: int = MAX_MESSAGE_SIZE, max_skew: float = MAX_SKEW) -> None:
        """A verifier for migration messages signed with ``key``."""
        super().__init__(key, max_size, max_skew)

    def _check(self, data: bytes, now: float) -> Message | str:
        """The message, or the reason to drop it."""
        outcome = super()._check(data, now)
        if isinstance(outcome, Message):
            return "unknown_type"
        if outcome != "unknown_type":
            return outcome
        envelope = msgpack.unpackb(bytes(data[MAC_SIZE:]), raw=False, strict_map_key=True)
        checks = BODY_CHECKS.get(envelope["type"])
        if checks is None:
            return "unknown_type"
        body = envelope["body"]
        if not all(name in body and check(body[name]) for name, check in checks.items()):
            return "malformed"
        last = self._last_seq.get(envelope["src"])
        if last is not None and envelope["seq"] <= last:
            return "replayed"
        if abs(now - envelope["ts"]) > self.max_skew:
            return "stale"
        return Message(envelope["type"], envelope["src"], envelope["seq"], float(envelope["ts"]), body)


def verify(verifier: Verifier, data: bytes, now: float) -> Message:
    """The verified message in ``data``, or WireError with the reason the verifier counted."""
    before = verifier.dropped.copy()
    message = verifier.verify(data, now)
    if message is None:
        reasons = verifier.dropped - before
        raise WireError(next(iter(reasons), "malformed"))
    return message


def sign(key: bytes, type: str, src: str, seq: int, now: float, body: dict[str, Any]) -> bytes:
    """One signed migration message, or WireError(``oversized``) when it is over :data:`MAX_MESSAGE_SIZE`."""
    data = encode(key, type, src, seq, now, body)
    if len(data) > MAX_MESSAGE_SIZE:
        raise WireError("oversized", f"{len(data)} bytes, at most {MAX_MESSAGE_SIZE}")
    return data


class Channel:
    """One migration TCP connection: signs and frames what it sends, verifies what it receives."""

    def __init__(self, sock: socket.socket, key: bytes, src: str, sequence: SequenceCounter,
                 clock: Callable[[], float] = time.time) -> None:
        """A channel over the connected ``sock``, signing as ``src`` with numbers from ``sequence``."""
        self.sock = sock
        self.key = key
        self.src = src
        self.sequence = sequence
        self.clock = clock
        self.verifier = MigrationVerifier(key)
        self._buffer = b""

    def send(self, type: str, body: dict[str, Any]) -> None:
        """Sign and send one message."""
        self.send_signed(sign(self.key, type, self.src, self.sequence.next(), self.clock(), body))

    def send_signed(self, data: bytes) -> None:
        """Send one already signed message as a frame."""
        self.sock.sendall(frame(data))

    def receive_frame(self, deadline: float) -> bytes:
        """The next frame, unverified; TimeoutError after ``deadline`` (monotonic), ConnectionError on EOF."""
        while True:
            try:
                data, self._buffer = read_frame(self._buffer)
            except ValueError as exc:
                raise WireError("oversized", str(exc)) from None
            if data is not None:
                return data
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no complete migration message before the deadline")
            self.sock.settimeout(remaining)
            chunk = self.sock.recv(_READ_SIZE)
            if not chunk:
                raise ConnectionError("peer closed the migration connection")
            self._buffer += chunk

    def receive(self, deadline: float, *types: str) -> Message:
        """The next verified message, which must be one of ``types`` (WireError ``unexpected`` otherwise)."""
        message = verify(self.verifier, self.receive_frame(deadline), self.clock())
        if message.type not in types:
            raise WireError("unexpected", f"{message.type} instead of {'/'.join(types)}")
        return message
