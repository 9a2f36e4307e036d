"""Flow-removed messages of connection entries: they keep the connection table exact."""

from __future__ import annotations

from typing import Any

from nlb_sdn.core.connections import atom_key, half_open_candidate
from nlb_sdn.core.conntrack import ConntrackManager
from nlb_sdn.core.context import CoreContext
from nlb_sdn.core.effects import Out
from nlb_sdn.core.manager import Manager
from nlb_sdn.core.model import Connection, ConnKey
from nlb_sdn.core.switching import SwitchDispatchManager
from nlb_sdn.flows import builders
from nlb_sdn.flows.family import match_address
from nlb_sdn.flows.l4 import match_ports
from nlb_sdn.flows.pipeline import Cookie, CookieKind, Table

LEARNED_TABLES = (Table.SWITCH_CONNECTIONS, Table.SWITCH_REVERSE)
"""Tables whose connection entries the switch made itself (``dispatch: switch``)."""
HANDSHAKE_PACKETS = 1
"""Packets a connection's forward entry counts once its handshake went on: the client's ACK. The SYN never counts
(it is released with the entry's actions, and a repeated SYN meets the VIP's SYN entry, of higher priority, first).
Fewer after ``half_open_timeout``: half-open, dropped."""
HALF_OPEN_CHECKS_PER_TICK = 1000
"""At most this many half-open checks (a flow stats request each) go out per tick; the rest wait for the next."""


def forward_key(match: dict[str, Any]) -> ConnKey:
    """The connection of a client-to-VIP entry's match, TCP or UDP, IPv4 or IPv6 (KeyError when the match is not
    exact)."""
    src_port, dst_port = match_ports(match)
    return match_address(match, "src"), src_port, match_address(match, "dst"), dst_port


def same_endpoint(cookie: Cookie, conn: Connection) -> bool:
    """Whether an entry with ``cookie`` leads to the member endpoint of ``conn`` (entries of one connection do)."""
    return cookie.endpoint_id == Cookie.decode(conn.route.cookie).endpoint_id


class ConnectionTracker(Manager):
    """Forgets connections whose entries are gone and removes their other direction."""

    def __init__(self, ctx: CoreContext, switching: SwitchDispatchManager, conntrack: ConntrackManager) -> None:
        self.ctx = ctx
        self.switching = switching
        self.conntrack = conntrack

    def flow_removed(
        self, dpid: int, table_id: int, cookie: Cookie, match: dict[str, Any], idle: bool, now: float, out: Out
    ) -> None:
        """Keep the connection table exact: forget the connection and remove its other direction.

        A connection whose flows idled out is remembered for the route linger time (locally and in its route atom),
        so a late segment re-plumbs it to the same member; one deleted on purpose is forgotten. A connection the
        switch learned (``dispatch: switch``) is forgotten either way: the switch, not the controller, picks the
        member of a new connection that reuses its ports.
        """
        if cookie.kind == CookieKind.TUNNEL:
            self._tunnel_removed(dpid, table_id, match, idle, now, out)
        elif table_id == Table.CT_FORWARD:
            self.conntrack.audit_removed(match, idle, out)
        else:
            self._nat_removed(dpid, table_id, cookie, match, idle, now, out)

    def half_open_checks(self, now: float, out: Out) -> None:
        """Ask each switch for the forward entry of its connections whose half-open check is due."""
        for _key, conn in self.ctx.table.due_half_open(now, HALF_OPEN_CHECKS_PER_TICK):
            out.send(conn.dpid, [builders.connection_stats_request(conn.route)])

    def packet_counts(self, dpid: int, counts: dict[ConnKey, int], now: float, out: Out) -> None:
        """A switch's packet counts of connection entries: a controller-plumbed nat connection past its half-open
        time whose entry saw fewer than ``HANDSHAKE_PACKETS`` never finished its handshake, so it is forgotten, its
        route atom deleted and its entries removed."""
        table = self.ctx.table
        for key, count in counts.items():
            conn = table.get(key)
            if conn is not None and conn.dpid == dpid and count >= HANDSHAKE_PACKETS:
                table.confirm(key)
            if (
                conn is None
                or conn.dpid != dpid
                or count >= HANDSHAKE_PACKETS
                or not half_open_candidate(conn)
                or conn.installed_at + table.half_open_timeout > now
            ):
                continue
            table.forget(key)
            out.delete(atom_key(key))
            out.send(dpid, builders.nat_connection_deletes(conn.route))
            self.ctx.counters.dropped["half_open"] += 1

    def _nat_removed(
        self, dpid: int, table_id: int, cookie: Cookie, match: dict[str, Any], idle: bool, now: float, out: Out
    ) -> None:
        """One direction of a nat connection (plumbed by the controller or learned by the switch) is gone."""
        ctx = self.ctx
        learned = table_id in LEARNED_TABLES
        try:
            if table_id in (Table.CONNECTIONS, Table.SWITCH_CONNECTIONS):
                key = forward_key(match)
            elif table_id in (Table.REVERSE, Table.SWITCH_REVERSE):
                state = ctx.vips.by_id(cookie.vip_id)
                if state is None:
                    return
                key = (match_address(match, "dst"), match_ports(match)[1], state.vip.address, state.vip.port)
            else:
                return
        except KeyError:
            ctx.counters.dropped["flow_removed_bad_match"] += 1
            return
        conn = ctx.table.get(key)
        if conn is not None and conn.dpid == dpid and not same_endpoint(cookie, conn):
            # An ended connection's entry toward another member (its client port was reused since): not this one's.
            ctx.counters.dropped["flow_removed_other_member"] += 1
            return
        if conn is not None and conn.dpid == dpid:
            ctx.table.forget(key)
            if learned:
                out.delete(atom_key(key))
        elif learned and idle:
            conn = self.switching.learned_connection(dpid, cookie, key, now)
            if conn is None:
                return
        else:
            return
        if learned:
            ctx.counters.switch_dispatch["connections_ended"] += 1
        else:
            ctx.table.ended(key, conn, idle, now, ctx.config.controller.dam.route_linger, out)
        out.send(dpid, builders.nat_connection_deletes(conn.route, learned))

    def _tunnel_removed(
        self, dpid: int, table_id: int, match: dict[str, Any], idle: bool, now: float, out: Out
    ) -> None:
        """A tunnel connection's only entry is gone: forget the connection (its route lingers after an idle end)."""
        if table_id != Table.CONNECTIONS:
            return
        try:
            key = forward_key(match)
        except KeyError:
            self.ctx.counters.dropped["flow_removed_bad_match"] += 1
            return
        conn = self.ctx.table.get(key)
        if conn is None or conn.dpid != dpid:
            return
        self.ctx.table.forget(key)
        self.ctx.table.ended(key, conn, idle, now, self.ctx.config.controller.dam.route_linger, out)
