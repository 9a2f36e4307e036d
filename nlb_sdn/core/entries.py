"""Table 0's base pipeline and each VIP service's entries: the service entry and, when punted, the SYN entry.

Every punt goes through a meter (``flows/pipeline.py``, "meters"): the switch-wide ones come with the base pipeline,
and each VIP service has its own SYN meter for as long as it exists (``controller.flood``).
"""

from __future__ import annotations

from typing import Any

from nlb_sdn.config import Config, Vip
from nlb_sdn.core.context import CoreContext
from nlb_sdn.core.manager import Manager
from nlb_sdn.core.model import Dispatch, VipState
from nlb_sdn.core.vips import Change, VipChange
from nlb_sdn.flows import builders
from nlb_sdn.flows.l4 import L4Protocol
from nlb_sdn.flows.pipeline import CookieKind, make_cookie


def dual_stack(config: Config) -> bool:
    """Whether the model has IPv6: a VIP service or a fabric host with an IPv6 address (table 0 then takes IPv6)."""
    return any(":" in vip.address for vip in config.vips) or any(host.ipv6 for host in config.fabric.hosts)


def syn_punted(vip: Vip | None) -> bool:
    """Whether a VIP model has every SYN go to the controller (dispatched by it, per connection), or, for a UDP
    service the controller dispatches, every datagram no flow entry takes (per connection or per session)."""
    if vip is None or Dispatch(vip.dispatch) != Dispatch.CONTROLLER:
        return False
    return vip.granularity == "connection" or not L4Protocol(vip.protocol).has_handshake


class VipEntries(Manager):
    """Owns the base pipeline (tables 0-3 skeleton) and every VIP service's table 0 and SYN entries."""

    def __init__(self, ctx: CoreContext) -> None:
        self.ctx = ctx

    def switch_flows(self, dpid: int) -> list[Any]:
        """The meters (every old one deleted first), the base pipeline, then each VIP service's entries."""
        ctx, flood = self.ctx, self.ctx.config.controller.flood
        msgs = builders.switch_meters(flood.miss_rate, flood.control_rate)
        msgs += [builders.vip_meter(state.vip_id, flood.vip_syn_rate) for state in ctx.vips]
        msgs += builders.base_flows(ctx.lbu_id, ctx.config.controller.packet_in_max_len, dual_stack(ctx.config))
        for state in ctx.vips:
            msgs += builders.vip_flows(
                ctx.lbu_id, state.vip_id, state.vip.address, state.vip.port, L4Protocol(state.vip.protocol)
            )
            msgs += self._syn_entry(state, punted=True, was_punted=False)
        return msgs

    def changes(self, changes: list[VipChange], shared: list[Any]) -> list[Any]:
        """Meters of removed and added VIP services, their entries, then ``shared``, then SYN entries that came or went.

        SYN entries come last: a VIP service leaving switch dispatch has its entries deleted by cookie first. Meters
        come first: a removed service's goes before an added one may take its id, and an added one's before its SYN
        entry uses it. Meter rates (``controller.flood``) take effect when a switch (re)connects.
        """
        lbu_id, rate = self.ctx.lbu_id, self.ctx.config.controller.flood.vip_syn_rate
        remaining_ips = {vip.address for vip in self.ctx.config.vips}
        gone_meters: list[Any] = []
        meters: list[Any] = []
        msgs: list[Any] = []
        syn_entries: list[Any] = []
        for change in changes:
            state, vip = change.state, change.state.vip
            if change.change == Change.REMOVED:
                gone_meters.append(builders.vip_meter_delete(state.vip_id))
                msgs += builders.vip_flow_deletes(
                    lbu_id, state.vip_id, vip.address, vip.port, remaining_ips, L4Protocol(vip.protocol)
                )
                syn_entries += self._syn_entry(state, punted=False, was_punted=syn_punted(change.old))
            else:
                if change.change == Change.ADDED:
                    meters.append(builders.vip_meter(state.vip_id, rate))
                    if ":" in vip.address:  # the first IPv6 service makes table 0 dual-stack (adding again is a no-op)
                        msgs += builders.ipv6_base_flows(make_cookie(CookieKind.BASE, lbu_id), self._max_len())
                    msgs += builders.vip_flows(lbu_id, state.vip_id, vip.address, vip.port, L4Protocol(vip.protocol))
                syn_entries += self._syn_entry(state, punted=True, was_punted=syn_punted(change.old))
        return gone_meters + meters + msgs + shared + syn_entries

    def _max_len(self) -> int:
        """Bytes of a punted packet the switch sends up."""
        return self.ctx.config.controller.packet_in_max_len

    def _syn_entry(self, state: VipState, punted: bool, was_punted: bool) -> list[Any]:
        """The SYN entry of a VIP service the controller dispatches per connection: added when it starts being one,
        deleted when it stops (it is removed, or dispatched by the switch, or pinned per session). A UDP service's
        datagram entry (``builders.vip_syn_flow``) follows the same rule."""
        vip = state.vip
        service = state.service
        now_punted = punted and service is not None and (service.punts_syns or syn_punted(vip))
        protocol = L4Protocol(vip.protocol)
        if now_punted and not was_punted:
            return [builders.vip_syn_flow(self.ctx.lbu_id, state.vip_id, vip.address, vip.port, protocol)]
        if was_punted and not now_punted:
            return [builders.vip_syn_delete(vip.address, vip.port, protocol)]
        return []
