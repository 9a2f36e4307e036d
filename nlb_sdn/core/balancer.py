"""The core of one LBU instance: a thin dispatcher that routes each event to the managers that own it.

It never touches a socket or a datapath. Every entry point takes an event and ``now`` and returns
:class:`~nlb_sdn.core.effects.Effects`: OpenFlow messages per dpid, DAM operations and H&L datagrams, which the app
shell carries out. See docs/architecture.md for the managers and the sequence of each event.
"""

from __future__ import annotations

from typing import Any

from nlb_sdn.config import Config
from nlb_sdn.config.openflow import allowed_dpids
from nlb_sdn.core import l7
from nlb_sdn.core.arp import ArpResponder
from nlb_sdn.core.conntrack import ConntrackManager
from nlb_sdn.core.context import CoreContext
from nlb_sdn.core.ctcounts import CounterRow
from nlb_sdn.core.effects import Effects, Out
from nlb_sdn.core.entries import VipEntries
from nlb_sdn.core.frames import ArpRequest, FrameError, NeighborSolicitation, parse_frame
from nlb_sdn.core.health import HealthManager
from nlb_sdn.core.icmp import IcmpResponder, is_icmp_frame
from nlb_sdn.core.manager import Manager
from nlb_sdn.core.mastership import Role, fenced
from nlb_sdn.core.migration import MigrationManager
from nlb_sdn.core.model import ConnKey, PacketIn
from nlb_sdn.core.paths import FabricPaths
from nlb_sdn.core.reconcile import FlowEntry, Reconciler
from nlb_sdn.core.revocation import SessionRevoker
from nlb_sdn.core.services import service_for
from nlb_sdn.core.switching import SwitchDispatchManager
from nlb_sdn.core.tracking import ConnectionTracker
from nlb_sdn.core.units import UnitMixWatch
from nlb_sdn.core.vips import Change, VipChange
from nlb_sdn.core.watch import MemberWatch
from nlb_sdn.dam.atoms import Atom, ChangeOp
from nlb_sdn.events import EventLog
from nlb_sdn.flows.pipeline import Cookie, CookieKind, Table
from nlb_sdn.health.handler import HealthHandler
from nlb_sdn.migration.tickets import Grant
from nlb_sdn.signed import KeyRing

CONNECTION_TABLES = frozenset((Table.CONNECTIONS, Table.SWITCH_CONNECTIONS))
"""Tables whose misses are segments of a VIP service's connections, for its service kind to classify."""
CONNTRACK_COPY_TABLES = frozenset((Table.SWITCH_SELECT, Table.CT_FORWARD, Table.CT_REVERSE))
"""Tables that copy conntrack-pinned connections' SYN, FIN and RST segments to the controller."""


class LoadBalancer:
    """The classifier's pure state machine: events and ``now`` in, effects out."""

    def __init__(
        self, config: Config, hl_key: KeyRing | bytes = b"", now: float = 0.0, vip_ids: dict[str, int] | None = None
    ) -> None:
        self.ctx = CoreContext.build(config, HealthHandler(config, hl_key, now))
        self.ctx.vips.prefer(vip_ids or {})
        self.router_picker = l7.RouterPicker()
        self.switching = SwitchDispatchManager(self.ctx)
        self.conntrack = ConntrackManager(self.ctx, self.switching)
        self.tracker = ConnectionTracker(self.ctx, self.switching, self.conntrack)
        self.reconciler = Reconciler(self.ctx, self.conntrack)
        self.migration = MigrationManager(self.ctx)
        self.arp = ArpResponder(self.ctx)
        self.icmp = IcmpResponder(self.ctx)
        self.hl = HealthManager(self.ctx, self.conntrack.counted)
        self.entries = VipEntries(self.ctx)
        self.paths = FabricPaths(self.ctx)
        self.watch = MemberWatch(self.ctx, self.hl)
        self.units = UnitMixWatch(self.ctx)
        self.revoker = SessionRevoker(self.ctx)
        self.managers: tuple[Manager, ...] = (
            self.entries,
            self.paths,
            self.switching,
            self.conntrack,
            self.ctx.table,
            self.ctx.affinity,
            self.tracker,
            self.reconciler,
            self.migration,
            self.arp,
            self.icmp,
            self.hl,
            self.revoker,
        )
        """Every manager, in the order their entries go to a (re)connecting switch."""
        self.role = Role.EQUAL
        """This controller's OpenFlow role (``controller.ha``): a slave's entry points return only datagrams."""
        self.allowed_dpids: frozenset[int] | None = None
        """The switches that may connect (None: any, while neither the fabric nor ``allowed_dpids`` lists one)."""
        self._startup = self.apply_config(config, dpids=(), now=now).datagrams
        """Datagrams of the first config, sent with the first tick."""

    # -- queries ----------------------------------------------------------------------------------------------------

    @property
    def config(self) -> Config:
        """The current model."""
        return self.ctx.config

    @property
    def lbu_id(self) -> int:
        """This LBU instance's id, carried in every cookie."""
        return self.ctx.lbu_id

    @property
    def origin(self) -> str:
        """This LBU instance's name as the origin of the atoms it writes."""
        return self.ctx.origin

    @property
    def health(self) -> HealthHandler:
        """The H&L handler: cache, allotments, probes."""
        return self.ctx.health

    @property
    def events(self) -> EventLog:
        """The event log (member changes and refused connections from here; the shell and REST add theirs)."""
        return self.ctx.events

    @property
    def migrations(self) -> l7.MigrationLog:
        """The recent migrations of l7 connections."""
        return self.migration.log

    def known_switch(self, dpid: int) -> bool:
        """Whether the static fabric lists this dpid."""
        return self.ctx.fabric.known_switch(dpid)

    def switch_allowed(self, dpid: int) -> bool:
        """Whether a switch may connect: listed in ``controller.openflow.allowed_dpids``, else in the fabric."""
        return self.allowed_dpids is None or dpid in self.allowed_dpids

    def switch_flows(self, dpid: int) -> list[Any]:
        """Everything a (re)connecting switch needs: base pipeline, VIP entries, paths, dispatch and conntrack."""
        return [msg for manager in self.managers for msg in manager.switch_flows(dpid)]

    def connections(self, vip: str | None = None, member: str | None = None) -> list[dict[str, Any]]:
        """Tracked connections, optionally only those of one VIP and/or member."""
        return self.ctx.table.view(vip, member)

    def member_state(self, vip: str, member: str) -> dict[str, Any]:
        """Target and current state of a member (KeyError when unknown)."""
        return self.hl.member_state(vip, member)

    def allotment(self, vip: str, now: float) -> dict[str, Any]:
        """The VIP's allotment in use, with every candidate's eligibility (KeyError when unknown)."""
        return self.hl.allotment(vip, now)

    def dispatch_shares(self, vip: str) -> dict[str, int]:
        """How many of the group's slots each member holds (switch-dispatched VIPs)."""
        return self.switching.shares(vip)

    def stats(self) -> dict[str, Any]:
        """Counters of the core: packet-ins by outcome, drops by reason, refusals, connections and selections."""
        ctx, counters = self.ctx, self.ctx.counters
        selections: dict[str, dict[str, int]] = {}
        for (vip, member), count in sorted(counters.selections.items()):
            selections.setdefault(vip, {})[member] = count
        return {
            "packet_in": dict(counters.packet_in),
            "dropped": dict(counters.dropped),
            "refused": dict(counters.refused + ctx.health.refused),
            "connections": {
                "total": len(ctx.table),
                "per_member": ctx.table.per_member_view(),
                "cap": ctx.config.controller.max_connections,
            },
            "selections": selections,
            "health": ctx.health.stats(),
            "sessions": ctx.affinity.stats(),
            "lingering_routes": len(ctx.table.lingering),
            "switch_dispatch": self.switching.stats() | {"counted": self.conntrack.counted_view()},
            "rebuilt_connections": ctx.table.rebuilt,
            "restored_connections": ctx.table.restored,
            "migrations": self.migration.stats(),
            "fabric": {
                "down_ports": len(ctx.fabric.down_ports),
                "down_switches": len(ctx.fabric.down_switches),
                "path_recomputations": ctx.fabric.recomputations,
            },
        }

    # -- switch events ----------------------------------------------------------------------------------------------

    @fenced
    def handle_packet_in(
        self, dpid: int, in_port: int, data: bytes, total_len: int, table_id: int, now: float, cookie: int = 0
    ) -> Effects:
        """A punted frame: ARP, a probe reply, a conntrack copy, or a segment for its VIP's service kind.

        ``cookie`` is the cookie of the entry that sent it (it names VIP and member in conntrack copies).
        """
        ctx, out = self.ctx, Out()
        ctx.counters.packet_in["total"] += 1
        if table_id == Table.CLASSIFY and is_icmp_frame(data):
            self.icmp.packet_in(dpid, in_port, data, out)
            return out.effects()
        try:
            frame = parse_frame(data, total_len)
        except FrameError as exc:
            ctx.counters.dropped[exc.reason] += 1
            return out.effects()
        if isinstance(frame, ArpRequest):
            self.arp.packet_in(frame, dpid, in_port, out)
        elif isinstance(frame, NeighborSolicitation):
            self.arp.solicitation(frame, dpid, in_port, out)
        elif table_id == Table.CLASSIFY:
            self.hl.probe_reply(frame, dpid, in_port, out)
        elif table_id in CONNTRACK_COPY_TABLES:
            self.conntrack.copy(dpid, table_id, frame, Cookie.decode(cookie), now, out)
        elif table_id not in CONNECTION_TABLES:
            ctx.counters.dropped["unexpected_table"] += 1
        else:
            state = ctx.vips.by_service(frame.dst_ip, frame.dst_port)
            if state is None or state.service is None:
                ctx.counters.dropped["not_vip_service"] += 1
            else:
                key = (frame.src_ip, frame.src_port, frame.dst_ip, frame.dst_port)
                state.service.packet_in(PacketIn(dpid, in_port, data, total_len, table_id, now, frame, key), out)
        return out.effects()

    @fenced
    def handle_flow_removed(
        self, dpid: int, table_id: int, cookie: int, match: dict[str, Any], idle: bool = True, now: float = 0.0
    ) -> Effects:
        """A connection or session entry is gone: keep the tables exact and remove its other direction."""
        out, decoded = Out(), Cookie.decode(cookie)
        if decoded.kind == CookieKind.SESSION:
            self.ctx.affinity.session_flow_removed(dpid, table_id, self.ctx.vips.by_id(decoded.vip_id), match)
        elif decoded.kind in (CookieKind.NAT, CookieKind.TUNNEL):
            self.tracker.flow_removed(dpid, table_id, decoded, match, idle, now, out)
        return out.effects()

    def set_role(self, role: Role, now: float) -> None:
        """Take the role the election gave us at ``now``; a change breaks what we heard of the switches as a writer,
        so connections known established before it are not restored (``Reconciler.role_changed``)."""
        if role is not self.role:
            self.reconciler.role_changed(now)
        self.role = role

    @fenced
    def switch_connected(self, dpid: int, now: float = 0.0) -> Effects:
        """A switch (re)connected: its established connections' entries, then its whole pipeline (connection entries
        in its tables are never wiped).

        Its links are up again for the others (``switch_up``). The full reconcile of its flows
        (``reconcile(..., after_connect=True)``) is to follow.
        """
        out = Out()
        self.reconciler.connected(dpid, now)
        self.reconciler.restore(dpid, now, out)  # first: no reply meets a table 2 without its connection's entry
        self.paths.switch_state(dpid, True, out)
        out.send(dpid, self.switch_flows(dpid))
        return out.effects()

    @fenced
    def switch_up(self, dpid: int, now: float = 0.0) -> Effects:
        """A fabric switch is back: the other switches' paths through it, where they are shorter (changes only)."""
        out = Out()
        self.paths.switch_state(dpid, True, out)
        return out.effects()

    @fenced
    def switch_down(self, dpid: int, now: float = 0.0) -> Effects:
        """A fabric switch disconnected: all its links are down for the others, which are rerouted around it."""
        out = Out()
        self.reconciler.disconnected(dpid, now)
        self.paths.switch_state(dpid, False, out)
        return out.effects()

    @fenced
    def port_status(self, dpid: int, port: int, up: bool, now: float = 0.0) -> Effects:
        """A switch port went up or down: paths are recomputed and changed entries sent when the fabric changed."""
        out = Out()
        self.paths.port_status(dpid, port, up, now, out)
        return out.effects()

    @fenced
    def reconcile(self, dpid: int, entries: list[FlowEntry], now: float = 0.0, after_connect: bool = False) -> Effects:
        """A switch's flows (from flow stats): delete what the model no longer wants, adopt live connections.

        ``after_connect``: all its flows, listed after it (re)connected: connections tracked from it before that
        whose entries it does not hold are forgotten.
        """
        out = Out()
        self.reconciler.reconcile(dpid, entries, self.switch_flows(dpid), now, out, after_connect)
        return out.effects()

    @fenced
    def packet_counts(self, dpid: int, counts: dict[ConnKey, int], now: float) -> Effects:
        """Packet counts of connection entries (the replies to half-open checks): half-open connections go."""
        out = Out()
        self.tracker.packet_counts(dpid, counts, now, out)
        return out.effects()

    def switch_counts(self, dpid: int, rows: list[CounterRow], now: float) -> None:
        """Packet counts of a switch's tables 6 and 8 (flow stats): the member counts of counters VIPs."""
        self.conntrack.observe_counts(dpid, rows, now)

    def counts_wanted(self) -> bool:
        """Whether some VIP service is tracked by counters (the switch sync tick then also reads tables 6 and 8)."""
        return bool(self.conntrack.counted_states())

    # -- timers, agents and the DAM ---------------------------------------------------------------------------------

    @fenced
    def tick(self, now: float, dpids: Any = ()) -> Effects:
        """Periodic work: H&L datagrams and probes, switch-dispatch group changes and conntrack audits."""
        out = Out()
        out.datagrams.extend(self._startup)
        self._startup = ()
        self.hl.tick(now, out)
        self.watch.check(now)
        self.units.check(now)
        self.tracker.half_open_checks(now, out)
        out.send_all(dpids, self.conntrack.expire_retired(now) + self.switching.group_updates(now))
        self.revoker.health_changed(dpids, out)
        self.conntrack.audits(now, out)
        return out.effects()

    @fenced
    def dispatch_updates(self, now: float, dpids: Any) -> Effects:
        """Group changes for switch-dispatched VIPs whose allotment moved, and retired conntrack members' deletes."""
        out = Out()
        out.send_all(dpids, self.conntrack.expire_retired(now) + self.switching.group_updates(now))
        return out.effects()

    @fenced
    def conntrack_audits(self, now: float) -> Effects:
        """Exact audit entries for conntrack-pinned connections that are due."""
        out = Out()
        self.conntrack.audits(now, out)
        return out.effects()

    @fenced
    def handle_datagram(self, data: bytes, addr: tuple[str, int], now: float) -> Effects:
        """An H&L message from an agent: the replies to send back (application sessions are recorded)."""
        out = Out()
        self.hl.datagram(data, addr, now, out)
        return out.effects()

    @fenced
    def expire(self, now: float) -> Effects:
        """Every manager forgets what has timed out: lingering routes, re-injections, conntrack records, sessions."""
        for manager in self.managers:
            manager.expire(now)
        return Out().effects()

    @fenced
    def load_atoms(self, atoms: list[Atom], now: float) -> Effects:
        """Rebuild from the DAM at start: live routes become connections, lingering ones re-plumbable, and sessions."""
        self.reconciler.load_atoms(atoms, now)
        return Out().effects()

    @fenced
    def apply_dam_change(self, op: ChangeOp, key: str, atom: Atom | None, now: float) -> Effects:
        """Another LBU changed an atom: keep the local session table and re-plumbable routes in step."""
        self.reconciler.dam_change(op, key, atom, now)
        return Out().effects()

    def rejected_atoms(self) -> list[tuple[str, str]]:
        """Atoms that ``load_atoms`` or ``apply_dam_change`` refused since the last call: (key, reason), to log."""
        return self.reconciler.take_rejected()

    @fenced
    def republish(self, now: float) -> Effects:
        """The DAM store lost its atoms: put this LBU's live sessions (remaining TTLs) and tracked routes again."""
        out = Out()
        self.ctx.affinity.republish(now, out)
        self.ctx.table.republish(out)
        return out.effects()

    # -- operator and router requests -------------------------------------------------------------------------------

    @fenced
    def delete_session(self, key: str) -> Effects:
        """Forget a session on request (REST); LookupError if there is none."""
        out = Out()
        if not self.ctx.affinity.drop(key, out):
            raise LookupError(key)
        return out.effects()

    @fenced
    def move_connection(self, vip: str, client_ip: str, client_port: int, target: str) -> Effects:
        """Re-plumb an l7 connection to ``target`` (LookupError naming what is unknown, ValueError if not l7)."""
        out = Out()
        self.migration.move(vip, client_ip, client_port, target, out)
        return out.effects()

    def migration_ticket(
        self, migration_id: str, vip: str, client_ip: str, client_port: int, member: str, now: float, nonce: str
    ) -> Grant:
        """A router's ticket to move a connection to ``member``'s host (see ``MigrationManager.ticket``)."""
        return self.migration.ticket(migration_id, vip, client_ip, client_port, member, now, nonce)

    @fenced
    def commit_migration(
        self, migration_id: str, vip: str, client_ip: str, client_port: int, member: str, now: float
    ) -> tuple[Effects, l7.Migration]:
        """The migration commit (SPEC §2.6): move the connection from its router to ``member`` and record it."""
        out = Out()
        migration = self.migration.commit(migration_id, vip, client_ip, client_port, member, now, out)
        return out.effects(), migration

    @fenced
    def report_migration(
        self,
        migration_id: str,
        vip: str,
        client_ip: str,
        client_port: int,
        router: str,
        member: str,
        outcome: str,
        reason: str,
        duration_ms: float | None,
        now: float,
    ) -> tuple[Effects, l7.Migration]:
        """A router's report of how a migration ended; a committed one that did not migrate goes back to its router."""
        out = Out()
        migration = self.migration.report(
            migration_id, vip, client_ip, client_port, router, member, outcome, reason, duration_ms, now, out
        )
        return out.effects(), migration

    # -- config -----------------------------------------------------------------------------------------------------

    @fenced
    def apply_config(self, new: Config, dpids: Any, now: float = 0.0) -> Effects:
        """Switch to ``new`` through the one diff path: the flow changes that take each connected switch there."""
        ctx, out = self.ctx, Out()
        old = ctx.config
        ct_before, ct_targets_before = self.conntrack.shared_flows(), self.conntrack.targets()
        fabric_changed = ctx.fabric.update(new.fabric)
        changes = ctx.vips.apply(new.vips, lambda state: ctx.table.forget_vip(state.vip.name))
        ctx.config = new
        ctx.table.max_connections = new.controller.max_connections
        ctx.table.half_open_timeout = new.controller.openflow.half_open_timeout
        self.allowed_dpids = allowed_dpids(new.controller.openflow, [switch.dpid for switch in new.fabric.switches])
        for change in changes:
            if change.change != Change.REMOVED:
                change.state.service = service_for(ctx, change.state, self.switching, self.router_picker)
        self.hl.config_changed(new, now, out)
        self.conntrack.retire(ct_targets_before, now)
        ct_adds, ct_deletes = self.conntrack.shared_changes(ct_before)
        shared = ct_adds + [msg for change in changes for msg in self._dispatch_change(change, now)] + ct_deletes
        for dpid in dpids:
            out.send(
                dpid,
                self.entries.changes(changes, shared)
                + self.paths.changes(dpid, old, changes, fabric_changed)
                + self.icmp.changes(dpid, old, new),
            )
        self.revoker.config_changed(changes, dpids, out)
        return out.effects()

    def _dispatch_change(self, change: VipChange, now: float) -> list[Any]:
        """The switch-dispatch part of one VIP service's change."""
        if change.change == Change.REMOVED:
            return self.switching.removed(change.state)
        return self.switching.changed(change.state, change.old, now)
