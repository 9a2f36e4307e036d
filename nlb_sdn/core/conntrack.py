"""Conntrack pinning: the per-member conntrack entries, the SYN/FIN/RST copies and the audit entries (table 8).

The switch picks and pins a conntrack-pinned connection itself; the controller hears of it asynchronously, from a
copy of its SYN (it started) and of its FIN or RST (it ended), and, as a backstop for lost copies, from the
idle-out of an exact audit entry each connection gets once it has lived its VIP's ``idle_timeout``.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from nlb_sdn.config import Fabric, Vip
from nlb_sdn.core.connections import atom_key
from nlb_sdn.core.context import CoreContext
from nlb_sdn.core.ctcounts import CounterRow, MemberCounts
from nlb_sdn.core.effects import Out
from nlb_sdn.core.frames import TcpSegment
from nlb_sdn.core.manager import Manager
from nlb_sdn.core.model import Connection, ConnKey, Dispatch, Pinning, Tracking, VipState
from nlb_sdn.core.switching import SwitchDispatchManager, same_target
from nlb_sdn.flows import builders, dispatch
from nlb_sdn.flows.family import match_address
from nlb_sdn.flows.l4 import match_ports
from nlb_sdn.flows.pipeline import Cookie, Table

CT_RETIRE_MAX = 3600.0
"""Seconds a member removed from every conntrack pool keeps its entries at most (its connections' end copies may
have been lost)."""
MAX_AUDITS = 2000
"""Conntrack audit entries installed per tick at most (each one is a flow-table change in the switch)."""


def _flow_key(msg: Any) -> tuple[int, int, frozenset[tuple[str, Any]]]:
    """A hashable identity of a built flow entry: table, priority and match fields."""
    return flow_identity(msg.table_id, msg.priority, dict(msg.match.items()))


def flow_identity(table_id: int, priority: int, match: dict[str, Any]) -> tuple[int, int, frozenset[tuple[str, Any]]]:
    """A hashable identity of a flow entry: table, priority and match fields."""
    return (
        table_id,
        priority,
        frozenset((name, tuple(value) if isinstance(value, list) else value) for name, value in match.items()),
    )


def _same_models(old: list[tuple[int, Vip]], new: list[tuple[int, Vip]]) -> bool:
    """Whether two lists of (VIP service id, model) hold the same ids and the very same model objects."""
    return len(old) == len(new) and all(a[0] == b[0] and a[1] is b[1] for a, b in zip(old, new, strict=True))


@dataclass(frozen=True, slots=True)
class SharedFlows:
    """The per-member conntrack entries at one moment, kept as their members: flow-mods are built only on demand.

    Building every member's four flow-mods takes about a millisecond; a config change of a VIP service with 20,000
    members diffs two snapshots by member and builds only the entries of members that came, went or changed.
    """

    lbu_id: int
    targets: dict[int, dispatch.SwitchTarget]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.messages(self.targets))

    def messages(self, endpoints: Iterable[int]) -> list[Any]:
        """The flow-mods of these endpoints' members (those the snapshot holds)."""
        chosen = [self.targets[endpoint] for endpoint in endpoints if endpoint in self.targets]
        return dispatch.ct_shared_flows(self.lbu_id, chosen)

    def changes_from(self, before: SharedFlows) -> tuple[list[Any], list[Any]]:
        """(adds, deletes) that take the entries of ``before`` to these: only members that differ are built."""
        old_targets, new_targets = before.targets, self.targets
        differ = {
            endpoint for endpoint, target in new_targets.items() if not same_target(old_targets.get(endpoint), target)
        }
        differ.update(endpoint for endpoint in old_targets if endpoint not in new_targets)
        old = {_flow_key(msg): msg for msg in before.messages(differ)}
        new = {_flow_key(msg): msg for msg in self.messages(differ)}
        adds = [msg for key, msg in new.items() if key not in old]
        deletes = [
            builders.flow_delete_strict(msg.table_id, msg.priority, msg.match)
            for key, msg in old.items()
            if key not in new
        ]
        return adds, deletes


class ConntrackManager(Manager):
    """Owns the conntrack-pinned connections' index by NATed key, their audits and the retired members' entries."""

    def __init__(self, ctx: CoreContext, switching: SwitchDispatchManager) -> None:
        self.ctx = ctx
        self.switching = switching
        self.index: dict[ConnKey, ConnKey] = {}
        """Connection keys by their NATed key (client to member), as tables 8 and 9 see them."""
        self.audit_due: list[tuple[float, ConnKey, float]] = []
        """Heap of (due, connection key, installed_at): connections to audit once they are due."""
        self.audited: dict[ConnKey, float] = {}
        """Audited connections, by their NATed key: the installed_at their audit entry is for."""
        self.retired: dict[int, tuple[dispatch.SwitchTarget, float]] = {}
        self.counts = MemberCounts()
        """Per-member counts of ``switch_tracking: counters`` VIPs, from flow stats of tables 6 and 8."""
        self._targets: tuple[list[tuple[int, Vip]], Fabric, dict[int, dispatch.SwitchTarget]] | None = None

    def targets(self) -> dict[int, dispatch.SwitchTarget]:
        """The members of every conntrack-pinned VIP service, by endpoint id.

        Remembered while those VIP services' models and the fabric stay the same (a config change asks four times).
        """
        states = [state for state in self.switching.states() if state.pinning == Pinning.CONNTRACK]
        inputs = [(state.vip_id, state.vip) for state in states]
        fabric = self.ctx.fabric.fabric
        cached = self._targets
        if cached is not None and cached[1] is fabric and _same_models(cached[0], inputs):
            return dict(cached[2])
        targets: dict[int, dispatch.SwitchTarget] = {}
        for state in states:
            for target in self.switching.targets(state.vip):
                known = targets.get(target.endpoint_id)
                copies = target.copies or (known is not None and known.copies)
                targets[target.endpoint_id] = target if target.copies == copies else replace(target, copies=copies)
        self._targets = (inputs, fabric, targets)
        return dict(targets)

    def counted_states(self) -> list[VipState]:
        """The conntrack-pinned VIP services tracked by counters (their switches copy nothing per connection)."""
        return [
            state
            for state in self.switching.states()
            if state.pinning == Pinning.CONNTRACK and Tracking(state.vip.switch_tracking) == Tracking.COUNTERS
        ]

    def observe_counts(self, dpid: int, rows: list[CounterRow], now: float) -> None:
        """A switch's tables 6 and 8 from flow stats: the per-member counts of counters VIPs."""
        self.counts.observe(dpid, rows, now)

    def counted(self, vip: str, member: str) -> int:
        """Estimated live connections of a member of a counters VIP (0 for any other VIP: it tracks them itself)."""
        state = self.ctx.vips.by_name(vip)
        if state is None or state.pinning != Pinning.CONNTRACK or state.dispatch != Dispatch.SWITCH:
            return 0
        found = state.vip.member(member)
        if found is None or Tracking(state.vip.switch_tracking) != Tracking.COUNTERS:
            return 0
        return self.counts.live(state.vip_id, found.endpoint_id, state.vip.idle_timeout)

    def counted_view(self) -> dict[str, dict[str, int]]:
        """Every counters VIP's estimated live connections per member (``GET /v1/stats``)."""
        return {
            state.vip.name: {member.name: self.counted(state.vip.name, member.name) for member in state.vip.members}
            for state in self.counted_states()
        }

    def switch_flows(self, dpid: int) -> list[Any]:
        """The conntrack skeleton and the per-member conntrack entries."""
        return dispatch.ct_base_flows(self.ctx.lbu_id) + list(self.shared_flows())

    def shared_flows(self) -> SharedFlows:
        """The per-member conntrack entries, shared by the VIP services; retired members keep theirs for a while."""
        targets = {endpoint: target for endpoint, (target, _since) in self.retired.items()}
        targets.update(self.targets())
        return SharedFlows(self.ctx.lbu_id, targets)

    def retire(self, before: dict[int, dispatch.SwitchTarget], now: float) -> None:
        """Members that left every conntrack pool keep their entries while their tracked connections run on."""
        current = self.targets()
        gone = before.keys() - current.keys()  # set operations in C: 20,000 members, none or one leaving
        for endpoint, target in before.items() if gone else ():
            if endpoint in gone:
                self.retired.setdefault(endpoint, (target, now))
        for endpoint in self.retired.keys() & current.keys():
            del self.retired[endpoint]

    def expire_retired(self, now: float) -> list[Any]:
        """Deletes of retired members' entries once none of their connections is left (or after CT_RETIRE_MAX)."""
        if not self.retired:
            return []
        before = self.shared_flows()
        live = self.ctx.table.switch_endpoints()
        for endpoint, (target, since) in list(self.retired.items()):
            if (target.member_address, target.member_port) not in live or now - since > CT_RETIRE_MAX:
                del self.retired[endpoint]
        return self.shared_changes(before)[1]

    def shared_changes(self, before: SharedFlows) -> tuple[list[Any], list[Any]]:
        """(adds, deletes) that take the shared conntrack entries from ``before`` to what the model wants now."""
        return self.shared_flows().changes_from(before)

    def schedule(self, key: ConnKey, conn: Connection) -> None:
        """Audit a conntrack-pinned connection once it has lived its VIP's ``idle_timeout``."""
        state = self.ctx.vips.by_service(key[2], key[3])
        if state is not None:
            heapq.heappush(self.audit_due, (conn.installed_at + state.vip.idle_timeout, key, conn.installed_at))

    def audits(self, now: float, out: Out) -> None:
        """Exact table 8 entries for conntrack-pinned connections that are due (at most ``MAX_AUDITS`` per call).

        The controller hears of a conntrack-pinned connection's end only from the copy of its FIN or RST. A copy the
        switch dropped, or that came while the controller was away, would leave the connection listed (and its member
        never ``drained``). Each connection that lives ``idle_timeout`` gets its own entry with that idle timeout;
        its flow-removed ends the connection here. Short connections end (by their copies) before they are due.
        """
        count = 0
        while self.audit_due and self.audit_due[0][0] <= now and count < MAX_AUDITS:
            _due, key, installed_at = heapq.heappop(self.audit_due)
            conn = self.ctx.table.get(key)
            state = self.ctx.vips.by_service(key[2], key[3])
            if conn is None or conn.installed_at != installed_at or state is None:
                continue
            member = state.vip.member(conn.member)
            if member is None or state.dispatch != Dispatch.SWITCH or state.pinning != Pinning.CONNTRACK:
                continue
            route = conn.route
            target = dispatch.SwitchTarget(
                member.endpoint_id, route.member_address, route.member_port, route.member_mac, route.protocol
            )
            out.send(
                conn.dpid,
                [dispatch.ct_audit_flow(self.switching.switch_vip(state.vip, state.vip_id), target, key[0], key[1])],
            )
            self.audited[(key[0], key[1], route.member_address, route.member_port)] = installed_at
            self.ctx.counters.switch_dispatch["conntrack_audits"] += 1
            count += 1

    def audit_removed(self, match: dict[str, Any], idle: bool, out: Out) -> None:
        """An audit entry idled out: its connection ended unseen (or has been idle ``idle_timeout``); forget it."""
        try:
            src_port, dst_port = match_ports(match)
            nat_key = (match_address(match, "src"), src_port, match_address(match, "dst"), dst_port)
        except KeyError:
            self.ctx.counters.dropped["flow_removed_bad_match"] += 1
            return
        audited_at = self.audited.pop(nat_key, None)
        key = self.index.get(nat_key)
        conn = self.ctx.table.get(key) if key is not None else None
        if idle and key is not None and conn is not None and conn.installed_at == audited_at:
            self.ended(key, "conntrack_audit_ended", out)

    def copy(self, dpid: int, table_id: int, segment: TcpSegment, cookie: Cookie, now: float, out: Out) -> None:
        """A copy of a conntrack-pinned connection's SYN (it started) or of its FIN or RST (it ends).

        The switch already forwarded the original: this only keeps the connection table, drain and the DAM right.
        """
        self.ctx.counters.packet_in["conntrack_copy"] += 1
        if table_id == Table.SWITCH_SELECT:
            self._started(dpid, segment, cookie, now, out)
            return
        key: ConnKey | None
        if table_id == Table.CT_FORWARD:
            key = self.index.pop((segment.src_ip, segment.src_port, segment.dst_ip, segment.dst_port), None)
        else:
            key = (segment.dst_ip, segment.dst_port, segment.src_ip, segment.src_port)
        if key is not None:
            self.ended(key, "conntrack_ended", out)

    def ended(self, key: ConnKey, counter: str, out: Out) -> None:
        """A conntrack-pinned connection ended (a copy said so, or its audit entry idled out): forget it everywhere."""
        conn = self.ctx.table.forget(key)
        if conn is None:
            return
        self.index.pop((key[0], key[1], conn.route.member_address, conn.route.member_port), None)
        self.ctx.counters.switch_dispatch[counter] += 1
        out.delete(atom_key(key))

    def _started(self, dpid: int, segment: TcpSegment, cookie: Cookie, now: float, out: Out) -> None:
        """The switch committed a new connection to the member its cookie names: track it (asynchronously)."""
        ctx = self.ctx
        state = ctx.vips.by_id(cookie.vip_id)
        member = state.member_by_endpoint(cookie.endpoint_id) if state else None
        key = (segment.src_ip, segment.src_port, segment.dst_ip, segment.dst_port)
        if state is None or member is None or state.service is None or key in ctx.table.by_key:
            return
        if ctx.table.full():
            ctx.counters.switch_dispatch["untracked_over_cap"] += 1  # the switch carries it; the table stays bounded
            return
        conn = Connection(
            dpid, state.vip.name, member.name, state.service.route(member, key[0], key[1]), now, Dispatch.SWITCH
        )
        ctx.table.add(key, conn)
        self.index[(key[0], key[1], member.address, member.port)] = key
        self.schedule(key, conn)
        ctx.counters.selected(conn.vip, conn.member)
        ctx.counters.switch_dispatch["conntrack_started"] += 1
        out.put(atom_key(key), conn.atom_data())

    def loaded(self, key: ConnKey, conn: Connection) -> None:
        """A switch-dispatched connection rebuilt from its route atom: indexed and audited again."""
        conn.dispatch = Dispatch.SWITCH
        self.index[(key[0], key[1], conn.route.member_address, conn.route.member_port)] = key
        self.schedule(key, conn)

    def expire(self, now: float) -> None:
        """Forget index and audit records of connections no longer tracked."""
        for nat_key in [k for k, conn_key in self.index.items() if conn_key not in self.ctx.table.by_key]:
            del self.index[nat_key]
        for nat_key in [k for k in self.audited if k not in self.index]:
            del self.audited[nat_key]
