"""Switch dispatch: the select groups whose buckets follow the allotment, and segments that missed learned entries."""

from __future__ import annotations

import operator
from typing import Any

from nlb_sdn.config import Fabric, Member, Vip
from nlb_sdn.config.diff import member_diff
from nlb_sdn.core.context import CoreContext
from nlb_sdn.core.effects import Out
from nlb_sdn.core.manager import Manager
from nlb_sdn.core.model import Affinity, Connection, ConnKey, Dispatch, PacketIn, Pinning, Tracking, VipState
from nlb_sdn.flows import builders, dispatch
from nlb_sdn.flows.l4 import L4Protocol
from nlb_sdn.flows.pipeline import Cookie
from nlb_sdn.health.allotment import largest_remainder

Targets = dict[str, dispatch.SwitchTarget | None]
"""Each member's switch target by name (None without a known MAC)."""
_name = operator.attrgetter("name")
REINJECT_WINDOW = 1.0
"""Seconds within which a second miss of the same segment's connection in the switch-learned table drops it."""
MAX_REINJECTED = 100_000


def same_target(old: dispatch.SwitchTarget | None, new: dispatch.SwitchTarget) -> bool:
    """Whether a member's target is unchanged (the very same object, most often, when its model did not change)."""
    return old is new or old == new


class SwitchDispatchManager(Manager):
    """Owns the select groups of switch-dispatched VIP services and the segments re-injected once."""

    def __init__(self, ctx: CoreContext) -> None:
        self.ctx = ctx
        self.slots: dict[str, list[int]] = {}
        """Each switch-dispatched VIP service's group buckets: the endpoint id each slot names."""
        self.unknown: set[str] = set()
        """Switch-dispatched VIP services whose members were not known yet (H&L cache cold) when their groups were last
        sent: switches keep the buckets they had, and the first warm tick sends the group."""
        self.sent: dict[str, dict[int, dispatch.SwitchTarget]] = {}
        """Each switch-dispatched VIP service's members as its table 6 entries name them, by endpoint id."""
        self.reinjected: dict[ConnKey, float] = {}
        self._targets: dict[str, tuple[Vip, Fabric, list[dispatch.SwitchTarget], Targets]] = {}
        self._computed: dict[str, tuple[tuple[Vip, Fabric, Any], list[int]]] = {}
        """Each switch-dispatched VIP service's last slots, with the inputs they were computed from."""

    def states(self) -> list[VipState]:
        """The VIP services the switches dispatch themselves."""
        return [state for state in self.ctx.vips if state.dispatch == Dispatch.SWITCH]

    def switch_vip(self, vip: Vip, vip_id: int) -> dispatch.SwitchVip:
        """A VIP service as the switch-dispatch flows need it (client_ip affinity also pins whole clients)."""
        prefix = vip.affinity_prefix if Affinity(vip.affinity) == Affinity.CLIENT_IP else None
        return dispatch.SwitchVip(
            self.ctx.lbu_id,
            vip_id,
            vip.address,
            vip.port,
            vip.mac,
            vip.idle_timeout,
            vip.hard_timeout,
            prefix,
            vip.session_flow_idle,
            vip.switch_pinning or Pinning.LEARN,
            L4Protocol(vip.protocol),
            Tracking(vip.switch_tracking) == Tracking.COPIES,
        )

    def targets(self, vip: Vip) -> list[dispatch.SwitchTarget]:
        """The members the switch can rewrite toward (those with a known MAC).

        Remembered per VIP model and fabric (both immutable): one config change asks several times for each. A new
        model of the VIP service rebuilds only the targets of the members it added or changed (``member_diff``):
        the others keep their very objects, so the conntrack and table 6 diffs see them unchanged at once.
        """
        fabric, protocol = self.ctx.fabric, L4Protocol(vip.protocol)
        copies = Tracking(vip.switch_tracking) == Tracking.COPIES
        cached = self._targets.get(vip.name)
        same_kind = cached is not None and (cached[0].protocol, cached[0].switch_tracking) == (
            vip.protocol,
            vip.switch_tracking,
        )
        if cached is not None and cached[1] is fabric.fabric and same_kind:
            if cached[0] is vip:
                return cached[2]
            named = cached[3]
            diff = member_diff(cached[0], vip)
            for member in diff.removed:
                named.pop(member.name, None)
            for member in [*diff.added, *(new for _old, new in diff.changed)]:
                named[member.name] = self._target(member, protocol, copies)
        else:
            named = {member.name: self._target(member, protocol, copies) for member in vip.members}
        targets = [target for target in map(named.__getitem__, map(_name, vip.members)) if target is not None]
        self._targets[vip.name] = (vip, fabric.fabric, targets, named)
        return targets

    def _target(self, member: Member, protocol: L4Protocol, copies: bool) -> dispatch.SwitchTarget | None:
        """One member as the switch rewrites toward it (for a service of ``protocol``, copying to the controller or
        not), or None without a known MAC."""
        fabric = self.ctx.fabric
        if not fabric.has_mac(member):
            return None
        mac = fabric.member_mac(member.address, member.mac)
        return dispatch.SwitchTarget(member.endpoint_id, member.address, member.port, mac, protocol, copies)

    def switch_flows(self, dpid: int) -> list[Any]:
        """The switch-dispatch skeleton, then every switch-dispatched VIP service's group and entries."""
        ctx = self.ctx
        msgs = dispatch.dispatch_base_flows(ctx.lbu_id, ctx.config.controller.packet_in_max_len)
        for state in self.states():
            name = state.vip.name
            slots = None if name in self.unknown else self.slots.get(name, [])
            switch_vip = self.switch_vip(state.vip, state.vip_id)
            msgs += dispatch.group_keep_or_add(state.vip_id, slots, dispatch.restored(switch_vip))
            msgs += dispatch.switch_vip_flows(switch_vip, self.targets(state.vip))
        return msgs

    def _slots(self, vip: Vip, now: float) -> list[int] | None:
        """The VIP's group buckets: each slot names a member's endpoint id, as many as its allotment share.

        None while the members are not known yet (agent health and a cold H&L cache). Computed again only when the
        VIP's model, the fabric or what health knows has changed since the last time: a tick of an unchanged
        20,000-member VIP costs nothing.
        """
        health = self.ctx.health
        if health.needs_warm_cache(vip) and not health.cache.warm(now):
            return None
        inputs = (vip, self.ctx.fabric.fabric, health.revision)
        computed = self._computed.get(vip.name)
        if computed is not None and computed[0][0] is vip and computed[0][1:] == inputs[1:]:
            return computed[1]
        shares = health.allotment_for(vip, self.ctx.fabric.has_mac, now).values
        counts = largest_remainder({name: float(value) for name, value in shares.items() if value}, dispatch.SLOTS)
        ids = {name: self._endpoint_of(vip, name) for name, count in counts.items() if count}
        slots = [ids[name] for name in sorted(ids) for _ in range(counts[name])]
        self._computed[vip.name] = (inputs, slots)
        return slots

    def _endpoint_of(self, vip: Vip, name: str) -> int:
        """The endpoint id of the member called ``name`` (from the health handler's index, not a scan of the pool)."""
        member = self.ctx.health.member_named(vip.name, name)
        if member is None:
            raise LookupError(f"{vip.name}/{name}: allotted but not indexed")
        return member.endpoint_id

    def group_updates(self, now: float) -> list[Any]:
        """Group changes for switch-dispatched VIP services whose allotment moved or became known (the cache warmed).

        While the members are not known, switches keep the buckets they have.
        """
        msgs: list[Any] = []
        for state in self.states():
            name = state.vip.name
            slots = self._slots(state.vip, now)
            if slots is None:
                continue
            if slots != self.slots.get(name) or name in self.unknown:
                self.unknown.discard(name)
                self.slots[name] = slots
                self.ctx.counters.switch_dispatch["group_updates"] += 1
                restore = dispatch.restored(self.switch_vip(state.vip, state.vip_id))
                msgs.append(dispatch.group_modify(state.vip_id, slots, restore))
        return msgs

    def removed(self, state: VipState) -> list[Any]:
        """A removed VIP service: its switch-dispatch entries and group, and every connection the switch learned."""
        self.slots.pop(state.vip.name, None)
        self.unknown.discard(state.vip.name)
        self.sent.pop(state.vip.name, None)
        self._targets.pop(state.vip.name, None)
        self._computed.pop(state.vip.name, None)
        msgs = dispatch.learned_flow_deletes(self.ctx.lbu_id, state.vip_id)
        if state.dispatch == Dispatch.SWITCH:
            msgs = dispatch.switch_vip_deletes(self.switch_vip(state.vip, state.vip_id)) + msgs
        return msgs

    def changed(self, state: VipState, old: Vip | None, now: float) -> list[Any]:
        """Switch-dispatch changes for an added (``old`` None) or changed VIP service; learned connections stay.

        A VIP service that stays switch-dispatched gets new table 6 entries only for members that came or changed
        (all of them when the VIP's own settings changed): a weight change of a 20,000-member pool sends one group.
        """
        new = state.vip
        was_switch = old is not None and Dispatch(old.dispatch) == Dispatch.SWITCH
        sent = self.sent.pop(new.name, {})
        if state.dispatch != Dispatch.SWITCH:
            self.slots.pop(new.name, None)
            self.unknown.discard(new.name)
            return dispatch.switch_vip_deletes(self.switch_vip(old, state.vip_id)) if old and was_switch else []
        switch_vip, targets = self.switch_vip(new, state.vip_id), self.targets(new)
        known = self._slots(new, now)
        slots = self.slots.get(new.name, []) if known is None else known
        if known is None:
            self.unknown.add(new.name)
        else:
            self.unknown.discard(new.name)
        self.slots[new.name] = slots
        self.sent[new.name] = {target.endpoint_id: target for target in targets}
        if old is None or not was_switch or old.switch_pinning != new.switch_pinning:
            removal = dispatch.switch_vip_deletes(self.switch_vip(old, state.vip_id)) if old and was_switch else []
            groups = dispatch.group_add(state.vip_id, slots, dispatch.restored(switch_vip))
            return removal + groups + dispatch.switch_vip_flows(switch_vip, targets)
        old_vip = self.switch_vip(old, state.vip_id)
        fresh = (
            targets
            if old_vip != switch_vip
            else [target for target in targets if not same_target(sent.get(target.endpoint_id), target)]
        )
        gone = [target for endpoint, target in sent.items() if endpoint not in self.sent[new.name]]
        return [
            *([] if known is None else [dispatch.group_modify(state.vip_id, slots, dispatch.restored(switch_vip))]),
            *dispatch.switch_vip_flows(switch_vip, fresh),
            *dispatch.select_flow_strict_deletes(old_vip, gone),
        ]

    def punt(self, pkt: PacketIn, out: Out) -> None:
        """A segment of a switch-dispatched VIP that met no learned entry: released once more, dropped after that.

        Open vSwitch makes the entries a SYN learned visible a little after the SYN has gone on, so a fast client's
        next segment can miss them; going round once through the controller is enough for it to find them. A
        segment that misses twice within ``REINJECT_WINDOW`` belongs to no connection the switch knows (its entries
        idled out): it is dropped, and nothing is re-plumbed from memory, because a new connection may reuse the
        port and the switch, not the controller, chose its member.
        """
        key, now = pkt.key, pkt.now
        first = self.reinjected.get(key)
        if (first is None or now - first > REINJECT_WINDOW) and pkt.whole and not pkt.segment.is_pure_syn:
            if len(self.reinjected) >= MAX_REINJECTED:
                self.reinjected.clear()
            self.reinjected[key] = now
            self.ctx.counters.switch_dispatch["reinjected"] += 1
            out.send(pkt.dpid, [builders.packet_out_table(pkt.in_port, pkt.data)])
            return
        self.ctx.counters.switch_dispatch["orphan"] += 1

    def learned_connection(self, dpid: int, cookie: Cookie, key: ConnKey, now: float) -> Connection | None:
        """A connection the switch dispatched and the controller had not heard of yet (its entry idled out first)."""
        state = self.ctx.vips.by_id(cookie.vip_id)
        member = state.member_by_endpoint(cookie.endpoint_id) if state else None
        if state is None or member is None or state.service is None:
            return None
        return Connection(
            dpid, state.vip.name, member.name, state.service.route(member, key[0], key[1]), now, Dispatch.SWITCH
        )

    def expire(self, now: float) -> None:
        """Forget re-injections older than the window."""
        for key in [k for k, first in self.reinjected.items() if now - first > REINJECT_WINDOW]:
            del self.reinjected[key]

    def shares(self, vip: str) -> dict[str, int]:
        """How many of the group's slots each member holds (switch-dispatched VIPs)."""
        service = self.ctx.config.vip(vip)
        slots = self.slots.get(vip, [])
        return {m.name: slots.count(m.endpoint_id) for m in service.members} if service else {}

    def stats(self) -> dict[str, Any]:
        """Switch-dispatch counters and every group's slots per member."""
        return {
            "counters": dict(self.ctx.counters.switch_dispatch),
            "slots": {name: self.shares(name) for name in self.slots},
        }
