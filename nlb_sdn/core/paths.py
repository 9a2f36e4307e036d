"""Fabric paths: table 3's per-switch output toward every host MAC, and the tunnel label entries (table 7).

Paths follow the live fabric: a port going down or up, or a switch disconnecting or reconnecting, recomputes them and
sends each other switch only its changed entries (an add replaces an entry in place, so established connections,
whose table 1 and 2 entries end in table 3 or 7, move to the new path without a reset).
"""

from __future__ import annotations

from typing import Any

from nlb_sdn.config import Config, Fabric
from nlb_sdn.core.context import CoreContext
from nlb_sdn.core.effects import Out
from nlb_sdn.core.manager import Manager
from nlb_sdn.core.model import Mode
from nlb_sdn.core.vips import Change, VipChange
from nlb_sdn.events import EventKind
from nlb_sdn.flows import builders, gateway, tunnel

Forwarding = dict[int, dict[str, int]]
"""Per switch dpid, the output port toward each host MAC."""


class FabricPaths(Manager):
    """Owns each switch's path entries and, while any VIP service tunnels, its tunnel skeleton and label entries."""

    def __init__(self, ctx: CoreContext) -> None:
        self.ctx = ctx

    def switch_flows(self, dpid: int) -> list[Any]:
        """A switch's paths toward every host and gateway, its prefix routes, then its tunnel entries."""
        return self._forward_flows(dpid) + self._tunnel_flows(dpid)

    def _forward_flows(self, dpid: int) -> list[Any]:
        """A switch's table 3: paths toward every host and router MAC, and the routes by prefix to the gateways."""
        ctx = self.ctx
        ports = ctx.fabric.forwarding.get(dpid, {})
        routes = gateway.prefix_routes(ctx.fabric.fabric, ctx.fabric.switch_name(dpid) or "", ports)
        return builders.forward_flows(ctx.lbu_id, ports) + gateway.route_flows(ctx.lbu_id, routes)

    def _tunnel_flows(self, dpid: int) -> list[Any]:
        """A switch's tunnel skeleton and label entries, while any VIP service is in tunnel mode."""
        ctx = self.ctx
        if not tunnel.uses_tunnels(ctx.config):
            return []
        hops = tunnel.label_hops(ctx.fabric.fabric, dpid, ctx.fabric.forwarding.get(dpid, {}), ctx.fabric.labels)
        return tunnel.tunnel_base_flows(ctx.lbu_id) + tunnel.label_flows(ctx.lbu_id, hops)

    def changes(self, dpid: int, old: Config, changes: list[VipChange], fabric_changed: bool) -> list[Any]:
        """Tunnel and path changes for one switch after a config change.

        Removed VIP services, and those that leave tunnel mode, lose their tunnel connections (nat cannot take over a
        connection whose host answers from the VIP); the label entries come with the first tunnel-mode VIP service,
        follow fabric changes and go with the last one. Paths are re-installed when the fabric changed.
        """
        ctx = self.ctx
        gone = [
            change.state
            for change in changes
            if change.change == Change.REMOVED
            or (change.old is not None and Mode(change.old.mode) == Mode.TUNNEL and change.state.mode != Mode.TUNNEL)
        ]
        msgs = [msg for state in gone for msg in tunnel.tunnel_vip_deletes(ctx.lbu_id, state.vip_id)]
        had, has = tunnel.uses_tunnels(old), tunnel.uses_tunnels(ctx.config)
        if had and not has:
            msgs += tunnel.label_deletes() + tunnel.tunnel_base_deletes()
        elif has and (fabric_changed or not had):
            msgs += tunnel.label_deletes() + self._tunnel_flows(dpid)
        if fabric_changed:
            msgs += self._forward_changes(dpid, ctx.fabric.previous.get(dpid, {}), old.fabric)
        return msgs

    def port_status(self, dpid: int, port: int, up: bool, now: float, out: Out) -> None:
        """A switch port went up or down: when it is a fabric port whose state changed, reroute around it."""
        fabric = self.ctx.fabric
        before = fabric.forwarding
        if not fabric.set_port(dpid, port, up):
            return
        moved = self._reroute(before, out)
        kind = EventKind.PORT_UP if up else EventKind.PORT_DOWN
        self.ctx.events.record(kind, now, dpid=f"{dpid:016x}", port=port, rerouted_switches=moved)

    def switch_state(self, dpid: int, up: bool, out: Out) -> int:
        """A fabric switch disconnected (its links are down for the others) or reconnected; switches rerouted.

        A reconnecting switch itself gets its whole pipeline from ``switch_flows``, so it is left out here.
        """
        fabric = self.ctx.fabric
        before = fabric.forwarding
        if not fabric.set_switch(dpid, up):
            return 0
        return self._reroute(before, out, skip=dpid)

    def _reroute(self, before: Forwarding, out: Out, skip: int | None = None) -> int:
        """Send every live switch the path and label entries that changed; how many switches changed."""
        moved = 0
        for dpid in self.ctx.fabric.live_switches():
            msgs = self._path_changes(dpid, before.get(dpid, {})) if dpid != skip else []
            if msgs:
                out.send(dpid, msgs)
                moved += 1
        return moved

    def _forward_changes(self, dpid: int, old: dict[str, int], old_fabric: Fabric) -> list[Any]:
        """One switch's table 3 entries that differ from ``old`` (its ports under ``old_fabric``): a strict delete
        toward each host no longer reached, an add (replacing in place, counters kept) toward each host whose out port
        changed, and the prefix routes toward gateways that changed."""
        ctx = self.ctx
        new = ctx.fabric.forwarding.get(dpid, {})
        msgs = [builders.forward_delete(mac) for mac in sorted(old.keys() - new.keys())]
        msgs += builders.forward_flows(ctx.lbu_id, {m: p for m, p in new.items() if old.get(m) != p})
        switch = ctx.fabric.switch_name(dpid) or ""
        return msgs + gateway.route_changes(
            ctx.lbu_id,
            gateway.prefix_routes(old_fabric, switch, old),
            gateway.prefix_routes(ctx.fabric.fabric, switch, new),
        )

    def _path_changes(self, dpid: int, old: dict[str, int]) -> list[Any]:
        """One switch's table 3 (and, while tunnels are used, table 7) entries that differ from ``old``."""
        ctx = self.ctx
        new = ctx.fabric.forwarding.get(dpid, {})
        msgs = self._forward_changes(dpid, old, ctx.fabric.fabric)
        if tunnel.uses_tunnels(ctx.config):
            fabric, labels = ctx.fabric.fabric, ctx.fabric.labels
            old_hops = set(tunnel.label_hops(fabric, dpid, old, labels))
            new_hops = set(tunnel.label_hops(fabric, dpid, new, labels))
            kept = {hop.label for hop in new_hops}
            msgs += [
                tunnel.label_delete(hop.label)
                for hop in sorted(old_hops, key=lambda hop: hop.label)
                if hop.label not in kept
            ]
            msgs += tunnel.label_flows(ctx.lbu_id, list(new_hops - old_hops))
        return msgs
