"""The connection table: tracked connections, per-member counts, the cap, and routes lingering after their flows.

Connection state comes from switches (a packet-in names its dpid), so it is trusted no further than that switch:
when it reconnects, its *established* connections (``established``) get their entries back before anything else
(``Reconciler.restore``), and the connections tracked from it that the flows it then holds do not show are forgotten
(:meth:`ConnectionTable.untrusted`, from ``Reconciler.reconcile``), and a connection plumbed for a SYN is *half-open*
until a check of its forward entry's packet count shows the handshake went on (``ConnectionTracker.half_open_checks``).
A switch that only disconnects keeps its connections: in ``fail_mode=secure`` it goes on forwarding them.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from nlb_sdn.core.effects import Out
from nlb_sdn.core.manager import Manager
from nlb_sdn.core.model import Connection, ConnKey, Dispatch, Mode
from nlb_sdn.dam.atoms import route_key

DEFAULT_HALF_OPEN_TIMEOUT = 0.0
"""Seconds after its SYN before a controller-dispatched connection's handshake is checked (0: never)."""


def atom_key(key: ConnKey) -> str:
    """The DAM key of a connection's route atom."""
    return route_key(*key)


def half_open_candidate(conn: Connection) -> bool:
    """Whether a new connection's handshake is checked: nat connections the controller plumbed for their SYN."""
    return conn.syn_tag is not None and conn.dispatch == Dispatch.CONTROLLER and conn.mode == Mode.NAT


class ConnectionTable(Manager):
    """Every connection this LBU instance tracks, by key, with per-member counts and lingering routes."""

    def __init__(self, max_connections: int, half_open_timeout: float = DEFAULT_HALF_OPEN_TIMEOUT) -> None:
        self.max_connections = max_connections
        self.half_open_timeout = half_open_timeout
        self.half_open: dict[ConnKey, float] = {}
        """Connections plumbed for a SYN whose handshake is not confirmed yet, with when to check them."""
        self.established: set[ConnKey] = set()
        """Connections known to have carried traffic after their SYN (a half-open check counted packets, or a late
        segment re-plumbed them): a restarted switch gets their entries back (``Reconciler.restore``)."""
        self.by_key: dict[ConnKey, Connection] = {}
        self.per_member: Counter[tuple[str, str]] = Counter()
        self.lingering: dict[ConnKey, tuple[Connection, float]] = {}
        """Routes whose flows idled out, until when a late segment may re-plumb them."""
        self.rebuilt = 0
        """Connections adopted from switches' flows or the DAM after a start."""
        self.restored = 0
        """Established connections whose entries were sent again to their reconnected switch (``restore``)."""

    def __len__(self) -> int:
        return len(self.by_key)

    def get(self, key: ConnKey) -> Connection | None:
        """The tracked connection under ``key``."""
        return self.by_key.get(key)

    def full(self) -> bool:
        """Whether the table holds ``max_connections``: new ones are refused (or, switch-dispatched, unlisted)."""
        return len(self.by_key) >= self.max_connections

    def add(self, key: ConnKey, conn: Connection, out: Out | None = None) -> None:
        """Track a connection (and publish its route atom when ``out`` is given)."""
        self.by_key[key] = conn
        self.per_member[(conn.vip, conn.member)] += 1
        if out is not None:
            out.put(atom_key(key), conn.atom_data())
            if self.half_open_timeout and half_open_candidate(conn):
                self.half_open[key] = conn.installed_at + self.half_open_timeout

    def republish(self, out: Out) -> None:
        """Put the route atom of every tracked connection again (the store lost them); lingering routes are not."""
        for key, conn in self.by_key.items():
            out.put(atom_key(key), conn.atom_data())

    def forget(self, key: ConnKey) -> Connection | None:
        """Remove a connection from the table and the per-member counts."""
        conn = self.by_key.pop(key, None)
        self.half_open.pop(key, None)
        self.established.discard(key)
        if conn is not None:
            pair = (conn.vip, conn.member)
            self.per_member[pair] -= 1
            if self.per_member[pair] <= 0:
                del self.per_member[pair]
        return conn

    def forget_vip(self, vip: str) -> None:
        """Forget every connection of a VIP service (its flows are deleted by cookie)."""
        for key in [k for k, conn in self.by_key.items() if conn.vip == vip]:
            self.forget(key)

    def ended(self, key: ConnKey, conn: Connection, idle: bool, now: float, linger: float, out: Out) -> None:
        """Flows gone: after an idle end the route lingers (a late segment re-plumbs it); otherwise it is forgotten."""
        if idle:
            self.lingering[key] = (conn, now + linger)
            out.touch(atom_key(key), linger)
        else:
            out.delete(atom_key(key))

    def revive(self, key: ConnKey, dpid: int, now: float, out: Out) -> Connection | None:
        """A lingering route of a connection whose late segment came back: tracked again on ``dpid``."""
        remembered = self.lingering.pop(key, None)
        if remembered is None or remembered[1] <= now:
            return None
        conn = remembered[0]
        conn.dpid = dpid
        self.add(key, conn, out)
        self.half_open.pop(key, None)  # a later segment came: the handshake went on
        self.established.add(key)
        return conn

    def due_half_open(self, now: float, limit: int) -> list[tuple[ConnKey, Connection]]:
        """Up to ``limit`` half-open connections whose check is due; they leave ``half_open`` (checked once)."""
        due: list[tuple[ConnKey, Connection]] = []
        for key, deadline in self.half_open.items():
            if len(due) >= limit:
                break
            if deadline <= now:
                due.append((key, self.by_key[key]))
        for key, _conn in due:
            del self.half_open[key]
        return due

    def confirm(self, key: ConnKey) -> None:
        """A tracked connection carried traffic after its SYN: it is established (kept across its switch's restart)."""
        if key in self.by_key:
            self.half_open.pop(key, None)
            self.established.add(key)

    def tracked_from(self, dpid: int) -> list[tuple[ConnKey, Connection]]:
        """The controller-dispatched connections tracked from ``dpid`` (their entries are on that switch)."""
        return [
            (key, conn)
            for key, conn in self.by_key.items()
            if conn.dpid == dpid and conn.dispatch == Dispatch.CONTROLLER
        ]

    def untrusted(self, dpid: int, seen: set[ConnKey], before: float, out: Out) -> int:
        """Forget the controller-dispatched connections tracked from ``dpid`` since before ``before`` whose entries
        the switch does not hold (not in ``seen``), and delete their route atoms. How many."""
        stale = [key for key, conn in self.tracked_from(dpid) if conn.installed_at < before and key not in seen]
        for key in stale:
            self.forget(key)
            out.delete(atom_key(key))
        return len(stale)

    def expire(self, now: float) -> None:
        """Drop lingering routes whose time is up."""
        for key in [k for k, (_conn, until) in self.lingering.items() if until <= now]:
            del self.lingering[key]

    def live(self, vip: str, member: str) -> int:
        """Tracked connections of one member of one VIP service."""
        return self.per_member.get((vip, member), 0)

    def switch_endpoints(self) -> set[tuple[str, int]]:
        """The member endpoints that switch-dispatched connections still use."""
        return {
            (conn.route.member_address, conn.route.member_port)
            for conn in self.by_key.values()
            if conn.dispatch == Dispatch.SWITCH
        }

    def view(self, vip: str | None = None, member: str | None = None) -> list[dict[str, Any]]:
        """Tracked connections for REST, optionally only those of one VIP and/or member."""
        return [
            conn.as_dict(key)
            for key, conn in self.by_key.items()
            if (vip is None or conn.vip == vip) and (member is None or conn.member == member)
        ]

    def per_member_view(self) -> dict[str, dict[str, int]]:
        """Connections per VIP service and member, for stats."""
        view: dict[str, dict[str, int]] = {}
        for (vip, member), count in sorted(self.per_member.items()):
            view.setdefault(vip, {})[member] = count
        return view
