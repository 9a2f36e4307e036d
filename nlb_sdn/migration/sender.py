"""The router half of a migration (FIG. 33, 3306-3308): dump the connection, send it, and let go of it or take it back.

:func:`migrate` never leaves the socket half-way: either the connection now lives on the host (``migrated``, the
local socket is closed without a packet), or the socket is back out of repair mode and the caller falls back
(proxies the connection itself, or resets the client), with ``reason`` saying why.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from nlb_sdn.migration.tcprepair import RepairError, drop_silently, dump, resume
from nlb_sdn.migration.tickets import Grant
from nlb_sdn.migration.wire import ABORT, GO, REPLY, Channel, WireError
from nlb_sdn.signed import SequenceCounter

FAILURE_REASONS = (
    "no_ticket",
    "dump_failed",
    "too_large",
    "unreachable",
    "timeout",
    "connection_lost",
    "bad_reply",
    "refused",
    "commit_failed",
)
"""Why a migration fell back: the controller gave no ticket, the socket could not be frozen, the state is over
64 KiB, the agent's port did not answer, no reply in time, the agent closed the connection (as it does on a ticket it
refuses), its reply did not verify, it refused (restore error, no application, rejected state), the caller's commit
raised."""
_SEQUENCE = SequenceCounter()
IDLE_REUSE = 30.0
"""Seconds an idle connection to an agent is kept for the next migration (the agent keeps it 60 s)."""
MAX_IDLE_PER_AGENT = 8
"""Idle connections kept per agent: as many as migrations to one agent can run at once (the router's workers)."""
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


class AgentChannels:
    """Idle migration connections to agents, kept for their next migration (thread-safe).

    A migration over a kept connection saves the TCP handshake with the agent, a third of a migration in the lab.
    A kept connection is used only when it has been idle less than ``idle_reuse`` seconds and the agent has not
    closed it; one the migration leaves in doubt (a timeout, a lost connection) is closed, never kept.
    """

    def __init__(
        self,
        idle_reuse: float = IDLE_REUSE,
        max_idle: int = MAX_IDLE_PER_AGENT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """At most ``max_idle`` idle connections per agent, each reused within ``idle_reuse`` seconds."""
        self.idle_reuse = idle_reuse
        self.max_idle = max_idle
        self.clock = clock
        self.counters = {"connected": 0, "reused": 0}
        self._idle: dict[tuple[str, int], list[tuple[Channel, float]]] = {}
        self._lock = threading.Lock()

    def take(
        self,
        address: tuple[str, int],
        deadline: float,
        key: bytes,
        src: str,
        sequence: SequenceCounter,
        clock: Callable[[], float],
        fresh: bool = False,
    ) -> tuple[Channel, bool]:
        """A kept connection to the agent at ``address`` that is still open (unless ``fresh``), or a new one; and
        whether it was kept (OSError when there is none)."""
        now = self.clock()
        with self._lock:
            idle = [] if fresh else self._idle.get(address, [])
            while idle:
                channel, since = idle.pop()
                if now - since < self.idle_reuse and _still_open(channel.sock):
                    self.counters["reused"] += 1
                    return channel, True
                channel.sock.close()
        channel = Channel(connect(address, deadline), key, src, sequence, clock)
        with self._lock:
            self.counters["connected"] += 1
        return channel, False

    def give_back(self, address: tuple[str, int], channel: Channel) -> None:
        """Keep a connection whose migration ended cleanly for the next migration to that agent."""
        with self._lock:
            idle = self._idle.setdefault(address, [])
            if len(idle) < self.max_idle:
                idle.append((channel, self.clock()))
                return
        channel.sock.close()

    def close(self) -> None:
        """Close every kept connection."""
        with self._lock:
            kept, self._idle = self._idle, {}
        for idle in kept.values():
            for channel, _since in idle:
                channel.sock.close()


def _still_open(sock: socket.socket) -> bool:
    """Whether an idle connection is open with nothing unread (an agent closes an idle one and says nothing else)."""
    sock.settimeout(0.0)
    try:
        sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False  # closed by the agent (end of stream), or bytes nobody asked for


def migrate(
    sock: socket.socket,
    agent_addr: tuple[str, int],
    ticket: Callable[[str], Grant],
    timeout: float = 2.0,
    *,
    src: str = "router",
    migration_id: str | None = None,
    commit: Callable[[], None] | None = None,
    sequence: SequenceCounter = _SEQUENCE,
    clock: Callable[[], float] = time.time,
    channels: AgentChannels | None = None,
) -> MigrationResult:
    """Move the established ``sock`` to the agent at ``agent_addr``; ``timeout`` bounds the connect and the ack.

    ``ticket(migration_id)`` fetches the controller's ticket for this connection and that agent's host, with the
    migration's channel key (:mod:`nlb_sdn.migration.tickets`), before the socket is frozen; if it raises, nothing
    moves (``no_ticket``). ``commit`` runs after the host has
    restored the connection and before the local socket is let go (the router's ``migration_commit``: point the
    forwarder at the host); if it raises, the migration is aborted. With
    ``channels`` the connection to the agent is taken from (and, when the migration ended cleanly, given back to)
    that pool; without, it is made for this migration and closed after it.
    """
    migration_id = migration_id or uuid.uuid4().hex
    try:
        grant = ticket(migration_id)
    except Exception as exc:  # noqa: BLE001 - whatever went wrong, the connection stays here, unfrozen
        return MigrationResult(migration_id, False, "no_ticket", str(exc))
    if grant.migration_id != migration_id:
        return MigrationResult(migration_id, False, "no_ticket", f"a ticket for migration {grant.migration_id}")

    def fallback(reason: str, detail: str) -> MigrationResult:
        resume(sock)
        return MigrationResult(migration_id, False, reason, detail)

    try:
        state = dump(sock)
    except RepairError as exc:
        return MigrationResult(migration_id, False, "dump_failed", str(exc))
    try:
        blob = state.to_wire(grant.channel_key, src, sequence.next(), clock(), migration_id)
    except WireError as exc:
        return fallback("too_large", str(exc))
    deadline = time.monotonic() + timeout
    fresh = False
    while True:
        try:
            channel, kept = (
                channels.take(agent_addr, deadline, grant.channel_key, src, sequence, clock, fresh)
                if channels is not None
                else (Channel(connect(agent_addr, deadline), grant.channel_key, src, sequence, clock), False)
            )
            channel.rekey(migration_id, grant.channel_key)
            channel.sock.settimeout(timeout)
        except OSError as exc:
            return fallback("timeout" if isinstance(exc, TimeoutError) else "unreachable", str(exc))
        result, clean = _migrate_over(
            channel, sock, migration_id, (grant.ticket, blob), deadline, timeout, commit, fallback, kept
        )
        if result is not None:
            break
        channel.sock.close()  # the agent had closed the kept connection: a fresh one (never kept) decides
        fresh = True
    if clean and channels is not None:
        channels.give_back(agent_addr, channel)
    else:
        channel.sock.close()
    return result


def _migrate_over(
    channel: Channel,
    sock: socket.socket,
    migration_id: str,
    messages: tuple[bytes, bytes],
    deadline: float,
    timeout: float,
    commit: Callable[[], None] | None,
    fallback: Callable[[str, str], MigrationResult],
    kept: bool = False,
) -> tuple[MigrationResult | None, bool]:
    """The conversation with the agent; the result, and whether it ended cleanly (the channel may carry another).

    None (the socket still frozen) when a ``kept`` connection turns out closed before the agent said anything: the
    agent went away or restarted since, and the caller asks again over a fresh connection.
    """
    try:
        channel.send_signed(*messages)
        reply = channel.receive(deadline, REPLY)
    except TimeoutError as exc:
        return fallback("timeout", str(exc)), False
    except WireError as exc:
        return fallback("bad_reply", str(exc)), False
    except OSError as exc:
        if kept:
            return None, False
        return fallback("connection_lost", str(exc)), False
    if not reply.body["ok"]:
        return fallback("refused", reply.body["error"]), True
    if reply.body["id"] != migration_id or reply.body["stage"] != "restore":
        return fallback("bad_reply", f"reply for {reply.body['id']} at stage {reply.body['stage']}"), False
    if commit is not None:
        try:
            commit()
        except Exception as exc:  # noqa: BLE001 - whatever went wrong, the connection stays here
            _abort(channel, migration_id, f"commit failed: {exc}")
            return fallback("commit_failed", str(exc)), False
    try:
        channel.send(GO, {"id": migration_id})
    except OSError as exc:
        return fallback("connection_lost", f"go not sent: {exc}"), False
    drop_silently(sock)
    delivered = _delivered(channel, migration_id, timeout)
    return MigrationResult(migration_id, True, delivered=delivered), delivered is not None


def connect(
    address: tuple[str, int],
    deadline: float,
    attempt: float = CONNECT_ATTEMPT,
    clock: Callable[[], float] = time.monotonic,
) -> socket.socket:
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
    with contextlib.suppress(OSError):
        channel.send(ABORT, {"id": migration_id, "reason": reason[:256]})


def _delivered(channel: Channel, migration_id: str, timeout: float) -> bool | None:
    """The host's final answer: did the application take the connection (None when it does not say in time)."""
    try:
        reply = channel.receive(time.monotonic() + timeout, REPLY)
    except (OSError, WireError):
        return None
    return reply.body["ok"] and reply.body["id"] == migration_id and reply.body["stage"] == "handoff"
