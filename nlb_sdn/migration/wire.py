"""The migration messages: signed envelopes in TCP frames (:mod:`nlb_sdn.signed`, as H&L), and their verification.

A migration runs over one TCP connection from the router to the host's migration port (7001): the controller's
ticket (:mod:`nlb_sdn.migration.tickets`, signed with the host's key), ``migrate`` (router → host, the connection
state), ``migrate_reply`` (host → router, after the restore and again after the hand-off), then ``migrate_go`` or
``migrate_abort`` (router → host). Every message but the ticket is signed with the migration's channel key (kid: the
migration id), which the ticket grants.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable
from typing import Any

from nlb_sdn.signed import (
    MAX_SKEW,
    TCP_MAX_SIZE,
    KeyRing,
    Message,
    OneKey,
    SequenceCounter,
    SignedVerifier,
    encode,
    frame,
    read_frame,
)

MIGRATION_PORT = 7001
MAX_MESSAGE_SIZE = TCP_MAX_SIZE
"""Largest signed message, state blob included (the TCP frame limit of signed messages, 64 KiB)."""
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
    REPLY: {
        "id": _migration_id,
        "ok": lambda value: isinstance(value, bool),
        "stage": lambda value: value in STAGES,
        "error": _text,
    },
    GO: {"id": _migration_id},
    ABORT: {"id": _migration_id, "reason": _text},
}
"""Required body fields of each migration message type and their checks (the state map is checked by
``ConnectionState.from_dict``)."""


def _body_check(checks: dict[str, Callable[[Any], bool]]) -> Callable[[dict[str, Any]], bool]:
    """The check of a body that must hold every field of ``checks``, each passing its check."""
    return lambda body: all(name in body and check(body[name]) for name, check in checks.items())


class MigrationVerifier(SignedVerifier):
    """The :class:`~nlb_sdn.signed.SignedVerifier` of migration messages: the types of :data:`BODY_CHECKS` only.

    H&L messages and tickets, even under the same key, are refused here as ``unknown_type``. The sender of a
    migration message is not bound to its key: both ends of a migration sign with its channel key.
    """

    def __init__(self, keys: KeyRing | bytes, max_size: int = MAX_MESSAGE_SIZE, max_skew: float = MAX_SKEW) -> None:
        """A verifier for migration messages signed with a key of ``keys``."""
        checks = {type: _body_check(checks) for type, checks in BODY_CHECKS.items()}
        super().__init__(keys, max_size, checks, max_skew, bind_src=False)


def verify(verifier: SignedVerifier, data: bytes, now: float) -> Message:
    """The verified message in ``data``, or WireError with the reason the verifier counted."""
    before = verifier.dropped.copy()
    message = verifier.verify(data, now)
    if message is None:
        reasons = verifier.dropped - before
        raise WireError(next(iter(reasons), "malformed"))
    return message


def sign(key: bytes, type: str, src: str, seq: int, now: float, body: dict[str, Any], kid: str | None = None) -> bytes:
    """One signed migration message (under key id ``kid``, default ``src``), or WireError(``oversized``) when it is
    over :data:`MAX_MESSAGE_SIZE`."""
    data = encode(key, type, src, seq, now, body, kid)
    if len(data) > MAX_MESSAGE_SIZE:
        raise WireError("oversized", f"{len(data)} bytes, at most {MAX_MESSAGE_SIZE}")
    return data


class Channel:
    """One migration TCP connection: signs and frames what it sends, verifies what it receives."""

    def __init__(
        self,
        sock: socket.socket,
        key: bytes,
        src: str,
        sequence: SequenceCounter,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """A channel over the connected ``sock``, signing as ``src`` with numbers from ``sequence``."""
        self.sock = sock
        self.src = src
        self.sequence = sequence
        self.clock = clock
        self.rekey(src, key)
        self._buffer = b""

    def rekey(self, kid: str, key: bytes) -> None:
        """Sign and verify from now on with ``key`` called ``kid`` (each migration's channel key)."""
        self.key = key
        self.kid = kid
        self.verifier = MigrationVerifier(OneKey(kid, key))

    def send(self, type: str, body: dict[str, Any]) -> None:
        """Sign and send one message."""
        self.send_signed(sign(self.key, type, self.src, self.sequence.next(), self.clock(), body, self.kid))

    def send_signed(self, *messages: bytes) -> None:
        """Send already signed messages, a frame each, in one write."""
        self.sock.sendall(b"".join(frame(data) for data in messages))

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
