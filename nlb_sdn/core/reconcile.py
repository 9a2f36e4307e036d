"""Rebuilding after a restart or reconnect: switches' flows are audited against the model, atoms are reloaded."""

from __future__ import annotations

from typing import Any

from nlb_sdn.core.conntrack import ConntrackManager, flow_identity
from nlb_sdn.core.context import CoreContext
from nlb_sdn.core.effects import Out
from nlb_sdn.core.manager import Manager
from nlb_sdn.core.model import Connection, ConnKey, Dispatch, Mode
from nlb_sdn.core.tracking import forward_key
from nlb_sdn.dam.atoms import ROUTE_PREFIX, SESSION_PREFIX, Atom, ChangeOp, parse_route_key
from nlb_sdn.flows import builders, templates, tunnel
from nlb_sdn.flows.pipeline import Cookie, CookieKind, Table
from nlb_sdn.framework import ofproto_v1_3_parser as parser

FlowEntry = tuple[int, int, dict[str, Any], int]
"""A switch's flow as flow stats report it: (table id, priority, match fields, cookie)."""
SESSION_TTL_UNKNOWN = 600.0
"""Seconds a session atom without an expiry is kept after a reload."""
BAD_ATOM_ERRORS = (LookupError, TypeError, ValueError, AttributeError, ArithmeticError)
"""What reading a connection or session out of an atom's key and data raises when the atom is not one we wrote."""
REJECTED_LIMIT = 1000
"""Refused atoms kept (key and reason) until the shell takes them to log; more are only counted."""
IDLE_EXPIRY_MARGIN = 2.0
"""Seconds Open vSwitch may take past an entry's idle timeout to remove it and send its flow-removed message."""


def _connection_key(match: dict[str, Any]) -> ConnKey:
    """The connection of a client-to-VIP entry's match, or an impossible key when the match is not exact."""
    try:
        return forward_key(match)
    except KeyError:
        return ("", 0, "", 0)


class Reconciler(Manager):
    """Audits a switch's flows against the model (stale ones go, live connections are adopted) and reloads atoms."""

    def __init__(self, ctx: CoreContext, conntrack: ConntrackManager) -> None:
        self.ctx = ctx
        self.conntrack = conntrack
        self.rejected: dict[str, str] = {}
        """Atoms refused since the shell last took them: key to reason (bounded; all are counted)."""
        self.connected_at: dict[int, float] = {}
        """When each switch last (re)connected: its first full reconcile trusts nothing tracked before that."""
        self.heard_since = 0.0
        """Since when we have heard every switch's flow removals without a break (our role last changed)."""
        self.down_at: dict[int, float] = {}
        """When each switch's OpenFlow channel was last seen closing (flow-removed messages stop there)."""

    def role_changed(self, now: float) -> None:
        """Our OpenFlow role changed at ``now``: a slave hears no flow removals and another master may have ended or
        moved our connections, so none known established before counts any more."""
        self.ctx.table.established.clear()
        self.heard_since = now

    def connected(self, dpid: int, now: float) -> None:
        """A switch (re)connected at ``now``; the full reconcile of its flows follows."""
        self.connected_at[dpid] = now

    def disconnected(self, dpid: int, now: float) -> None:
        """A switch's channel closed at ``now``: what it removed after that is not heard of."""
        self.down_at[dpid] = now

    def restore(self, dpid: int, now: float, out: Out) -> int:
        """A switch (re)connected at ``now``: send it the entries of its established connections from their routes
        (same cookies, the VIP's full idle timeout), before its pipeline. How many.

        Sent first, they are in the switch before its table 2 miss lets a member's replies through un-rewritten (the
        client would answer those with a reset), and in the flow-stats listing the audit that follows compares with,
        so the audit keeps them. On a switch that kept its entries (a reconnect, not a restart) they replace
        themselves in place, counters kept. Half-open and unconfirmed connections get nothing: the audit forgets them.
        """
        heard_until = min(now, self.down_at.pop(dpid, now))
        table, restored = self.ctx.table, 0
        for key, conn in table.tracked_from(dpid):
            if not self.established(key, conn, heard_until):
                continue
            table.confirm(key)
            route = conn.route
            if isinstance(route, tunnel.TunnelRoute):
                out.send(dpid, tunnel.tunnel_connection_flows(route))
            else:
                out.send(dpid, templates.nat_connection_flows(route))
            restored += 1
        table.restored += restored
        return restored

    def established(self, key: ConnKey, conn: Connection, heard_until: float) -> bool:
        """Whether a tracked connection carried traffic after its SYN: its half-open check counted packets, a late
        segment re-plumbed it, or its entries, plumbed with ``flood.half_open_idle``, outlived that idle timeout while
        the switch still reported removals to us (from ``heard_since`` until ``heard_until``)."""
        if key in self.ctx.table.established:
            return True
        short = self.ctx.config.controller.flood.half_open_idle
        return (
            conn.syn_tag is not None
            and 0 < short < conn.route.idle_timeout
            and self.heard_since <= conn.installed_at
            and conn.installed_at + short + IDLE_EXPIRY_MARGIN <= heard_until
        )

    def reconcile(
        self,
        dpid: int,
        entries: list[FlowEntry],
        wanted: list[Any],
        now: float,
        out: Out,
        after_connect: bool = False,
    ) -> None:
        """Delete what a switch holds that the model does not want (``wanted``: its switch flows), adopt the rest.

        Our base and fabric entries not wanted go, and so do connection flows of VIP services that no longer exist.
        Flows with cookies of other kinds are left alone. Connection and session flows of live VIP services that the
        tables do not know (after a controller restart) are adopted: the cookie names VIP and member.

        ``after_connect``: ``entries`` are all the switch's flows, listed after it (re)connected and after
        :meth:`restore` sent it its established connections. Connections tracked from it before that whose entries
        it does not hold are forgotten (state from a switch is not trusted beyond that switch: a forged or stale claim
        of its dpid, half-open connections, or atoms reloaded from the DAM, do not survive).
        """
        wanted_keys = {
            flow_identity(msg.table_id, msg.priority, dict(msg.match.items()))
            for msg in wanted
            if isinstance(msg, parser.OFPFlowMod)
        }
        deletes: list[Any] = []
        seen: set[ConnKey] = set()
        for table_id, priority, match, raw_cookie in entries:
            cookie = Cookie.decode(raw_cookie)
            if table_id == Table.CONNECTIONS and cookie.kind in (CookieKind.NAT, CookieKind.TUNNEL):
                seen.add(_connection_key(match))
            if cookie.kind in (CookieKind.BASE, CookieKind.FABRIC):
                stale = flow_identity(table_id, priority, match) not in wanted_keys
            elif cookie.kind == CookieKind.TUNNEL:
                stale = self._tunnel_stale(dpid, table_id, cookie, match, now, out)
            elif cookie.kind in (CookieKind.NAT, CookieKind.SESSION):
                stale = self.ctx.vips.by_id(cookie.vip_id) is None
                if not stale and table_id in (Table.CONNECTIONS, Table.SWITCH_CONNECTIONS):
                    self.adopt(dpid, cookie, match, now, out, table_id == Table.SWITCH_CONNECTIONS)
            else:
                stale = False
            if stale:
                deletes.append(builders.flow_delete_strict(table_id, priority, builders.match_from_fields(match)))
        out.send(dpid, deletes)
        if after_connect:
            since = self.connected_at.pop(dpid, now)
            forgotten = self.ctx.table.untrusted(dpid, seen, since, out)
            if forgotten:
                self.ctx.counters.dropped["not_on_switch"] += forgotten

    def _tunnel_stale(
        self, dpid: int, table_id: int, cookie: Cookie, match: dict[str, Any], now: float, out: Out
    ) -> bool:
        """Whether a tunnel connection entry found in a switch is stale (its VIP is gone or left tunnel mode).

        Live ones are adopted.
        """
        state = self.ctx.vips.by_id(cookie.vip_id)
        if state is None or state.mode != Mode.TUNNEL:
            return True
        if table_id == Table.CONNECTIONS:
            self.adopt(dpid, cookie, match, now, out)
        return False

    def adopt(
        self, dpid: int, cookie: Cookie, match: dict[str, Any], now: float, out: Out, learned: bool = False
    ) -> None:
        """Take a connection or session flow found in a switch into the tables.

        After a restart that rebuilds the tables; for switch-dispatched VIPs (``learned``: the switch made the entry
        itself) it is how the controller hears about their connections and sessions.
        """
        ctx = self.ctx
        state = ctx.vips.by_id(cookie.vip_id)
        member = state.member_by_endpoint(cookie.endpoint_id) if state else None
        if state is None or member is None or state.service is None:
            return
        if cookie.kind == CookieKind.SESSION:
            ctx.affinity.adopt_session_flow(dpid, state, member, match)
            if learned:
                ctx.affinity.learned(state, member, match, now, out)
            return
        try:
            key = forward_key(match)
        except KeyError:
            return
        if key in ctx.table.by_key:
            return
        conn = Connection(
            dpid,
            state.vip.name,
            member.name,
            state.service.route(member, key[0], key[1]),
            now,
            Dispatch.SWITCH if learned else Dispatch.CONTROLLER,
        )
        ctx.table.add(key, conn, out)
        ctx.table.lingering.pop(key, None)
        ctx.table.rebuilt += 1

    def load_atoms(self, atoms: list[Atom], now: float) -> None:
        """Rebuild from the DAM at start: live routes become connections, lingering ones re-plumbable, and sessions.

        An atom whose key or data is not what an LBU writes is refused alone (counted, kept for the shell to log).
        """
        for atom in atoms:
            try:
                if atom.key.startswith(SESSION_PREFIX):
                    expires_at = atom.expires_at or now + SESSION_TTL_UNKNOWN
                    self.ctx.affinity.load(atom.key, atom.data, expires_at, atom.origin)
                elif atom.key.startswith(ROUTE_PREFIX):
                    self._load_route(atom, now)
            except BAD_ATOM_ERRORS as exc:
                self._reject(atom.key, exc)

    def _reject(self, key: str, exc: Exception) -> None:
        """Count an atom that could not be read, and keep why for the shell's log."""
        self.ctx.counters.dropped["dam_bad_atom"] += 1
        if len(self.rejected) < REJECTED_LIMIT:
            self.rejected.setdefault(key, f"{type(exc).__name__}: {exc}")

    def take_rejected(self) -> list[tuple[str, str]]:
        """The atoms refused since the last call, with the reasons (for the shell to log); the list is cleared."""
        rejected, self.rejected = list(self.rejected.items()), {}
        return rejected

    def _route_atom(self, key: str, data: dict[str, Any], now: float) -> tuple[ConnKey, Connection] | None:
        """The connection a route atom describes, if its VIP service and member still exist."""
        conn_key = parse_route_key(key)
        state = self.ctx.vips.by_service(conn_key[2], conn_key[3])
        member = state.vip.member(data.get("member", "")) if state else None
        if state is None or member is None or state.service is None:
            return None
        route = state.service.route(member, conn_key[0], conn_key[1])
        return conn_key, Connection(int(data.get("dpid", 0)), state.vip.name, member.name, route, now)

    def _load_route(self, atom: Atom, now: float) -> None:
        """One route atom into the connection table (no expiry: live) or the lingering routes."""
        found = self._route_atom(atom.key, atom.data, now)
        if found is None:
            return
        key, conn = found
        if atom.expires_at is None:
            if key not in self.ctx.table.by_key:
                self.ctx.table.add(key, conn)
            if atom.data.get("dispatch") == Dispatch.SWITCH:
                self.conntrack.loaded(key, conn)
        else:
            self.ctx.table.lingering[key] = (conn, atom.expires_at)

    def dam_change(self, op: ChangeOp, key: str, atom: Atom | None, now: float) -> None:
        """Another LBU changed an atom: keep the local session table and re-plumbable routes in step.

        A change whose atom cannot be read is refused alone, as in :meth:`load_atoms`.
        """
        if atom is not None and atom.origin == self.ctx.origin:
            return
        try:
            self._follow(op, key, atom, now)
        except BAD_ATOM_ERRORS as exc:
            self._reject(key, exc)

    def _follow(self, op: ChangeOp, key: str, atom: Atom | None, now: float) -> None:
        """Apply another LBU's change to the session table or the re-plumbable routes."""
        if key.startswith(SESSION_PREFIX):
            if op == "put" and atom is not None:
                self.load_atoms([atom], now)
            else:
                self.ctx.affinity.sessions.remove(key)
        elif key.startswith(ROUTE_PREFIX) and op == "put" and atom is not None:
            found = self._route_atom(key, atom.data, now)
            if found is not None and found[0] not in self.ctx.table.by_key:
                until = (
                    atom.expires_at
                    if atom.expires_at is not None
                    else (now + self.ctx.config.controller.dam.route_linger)
                )
                self.ctx.table.lingering[found[0]] = (found[1], until)
