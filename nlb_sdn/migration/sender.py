"""The router half of a migration (FIG. 33, 3306-3308): dump the connection, send it, and let go of it or take it back.

:func:`migrate` never leaves the socket half-way: either the connection now lives on the host (``migrated``, the
local socket is closed without a packet), or the socket is back out of repair mode and the caller falls back
(proxies the connection itself, or resets the client), with ``reason`` saying why.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from nlb_sdn.health.protocol import SequenceCounter
from nlb_sdn.migration.tcprepair import RepairError, drop_silently, dump, resume
from nlb_sdn.migration.wire import ABORT, GO, REPLY, Channel, WireError

FAILURE_REASONS = ("dump_failed", "too_large", "unreachable", "timeout", "connection_lost", "bad_reply", "refused",
                   "commit_failed")
"""Why a migration fell back: the socket could not be frozen, the state is over 64 KiB, the agent's port did not
answer, no reply in time, the agent closed the connection, its reply did not verify, it refused (restore error,
no application, rejected state), the caller's commit raised."""
_SEQUENCE = SequenceCounter()
CONNECT_ATTEMPT = 0.25
"""Seconds one connect to the agent may take before a fresh one (a new SYN) is tried, within the deadline: the
kernel would retransmit a lost SYN only after a second, the whole default budget of a migration."""


@dataclass(frozen=True)
class MigrationResult:
    """The outcome of :func:`migrate`."""

    migration_id: str
    migrated: bool
    """True: the host owns the connection and the local socket is closed. False: the socket is live again here."""
    reason: str = ""
    """Empty when migrated, else one of :data:`FAILURE_REASONS`."""
    detail: str = ""
    delivered: bool | None = None
    """For a migrated connection: whether the host's application took it (None: no answer in time)."""


def migrate(sock: socket.socket, agent_addr: tuple[str, int], key: bytes, timeout: float = 2.0, *,
            src: str = "router", migration_id: str | None = None, commit: Callable[[], None] | None = None,
            sequence: SequenceCounter = _SEQUENCE, clock: Callable[[], float] = time.time) -> MigrationResult:
    """Move the established ``sock`` to the agent at ``agent_addr``; ``timeout`` bounds the connect and the ack.

    ``commit`` runs after the host has restored the connection and before the local socket is let go (the router's
    ``migration_commit``: point the forwarder at the host); if it raises, the migration is aborted.
    """
    migration_id = migration_id or uuid.uuid4().hex

    def fallback(reason: str, detail: str) -> MigrationResult:
        resume(sock)
        return MigrationResult(migration_id, False, reason, detail)

    try:
        state = dump(sock)
    except RepairError as exc:
        return MigrationResult(migration_id, False, "dump_failed", str(exc))
    try:
        blob = state.to_wire(key, src, sequence.next(), clock(), migration_id)
    except WireError as exc:
        return fallback("too_large", str(exc))
    deadline = time.monotonic() + timeout
    try:
        agent = connect(agent_addr, deadline)
        agent.settimeout(timeout)
    except OSError as exc:
        return fallback("timeout" if isinstance(exc, TimeoutError) else "unreachable", str(exc))
    with agent:
        channel = Channel(agent, key, src, sequence, clock)
        try:
            channel.send_signed(blob)
            reply = channel.receive(deadline, REPLY)
        except TimeoutError as exc:
            return fallback("timeout", str(exc))
        except WireError as exc:
            return fallback("bad_reply", str(exc))
        except OSError as exc:
            return fallback("connection_lost", str(exc))
        if not reply.body["ok"]:
            return fallback("refused", reply.body["error"])
        if reply.body["id"] != migration_id or reply.body["stage"] != "restore":
            return fallback("bad_reply", f"reply for {reply.body['id']} at stage {reply.body['stage']}")
        if commit is not None:
            try:
                commit()
            except Exception as exc:  # whatever went wrong, the connection stays here
                _abort(channel, migration_id, f"commit failed: {exc}")
                return fallback("commit_failed", str(exc))
        try:
            channel.send(GO, {"id": migration_id})
        except OSError as exc:
            return fallback("connection_lost", f"go not sent: {exc}")
        drop_silently(sock)
        return MigrationResult(migration_id, True, delivered=_delivered(channel, migration_id, timeout))


def connect(address: tuple[str, int], deadline: float, attempt: float = CONNECT_ATTEMPT,
            clock: Callable[[], float] = time.monotonic) -> socket.socket:
    """A TCP connection to ``address`` before ``deadline``, a new attempt every ``attempt`` seconds (TimeoutError).

    A refused or unreachable address raises at once (OSError): only silence is worth another SYN.
    """
    while True:
        remaining = deadline - clock()
        if remaining <= 0:
            raise TimeoutError(f"no connection to {address[0]}:{address[1]} in time")
        try:
            return socket.create_connection(address, min(attempt, remaining))
        except TimeoutError:
            continue


def _abort(channel: Channel, migration_id: str, reason: str) -> None:
    """Tell the host to discard its copy (best effort: it discards it anyway when the connection ends)."""
    try:
        channel.send(ABORT, {"id": migration_id, "reason": reason[:256]})
    except OSError:
        pass


def _delivered(channel: Channel, migration_id: str, timeout: float) -> bool | None:
    """The host's final answer: did the application take the connection (None when it does not say in time)."""
    try:
        reply = channel.receive(time.monotonic() + timeout, REPLY)
    except (OSError, WireError):
        return None
    return reply.body["ok"] and reply.body["id"] == migration_id and reply.body["stage"] == "handoff"
