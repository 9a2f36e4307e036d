"""Fabric paths: table 3's per-switch output toward every host MAC, and the tunnel label entries (table 7)."""

from __future__ import annotations

from typing import Any

from nlb_sdn.config import Config
from nlb_sdn.core.context import CoreContext
from nlb_sdn.core.manager import Manager
from nlb_sdn.core.model import Mode
from nlb_sdn.core.vips import Change, VipChange
from nlb_sdn.flows import builders, tunnel
from nlb_sdn.flows.pipeline import KIND_MASK, CookieKind, Table, make_cookie


class FabricPaths(Manager):
    """Owns each switch's path entries and, while any VIP service tunnels, its tunnel skeleton and label entries."""

    def __init__(self, ctx: CoreContext) -> None:
        self.ctx = ctx

    def switch_flows(self, dpid: int) -> list[Any]:
        """A switch's paths toward every host, then its tunnel entries."""
        ctx = self.ctx
        return builders.forward_flows(ctx.lbu_id, ctx.fabric.forwarding.get(dpid, {})) + self._tunnel_flows(dpid)

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
            msgs.append(builders.flow_delete(Table.FORWARD, make_cookie(CookieKind.FABRIC), KIND_MASK))
            msgs += builders.forward_flows(ctx.lbu_id, ctx.fabric.forwarding.get(dpid, {}))
        return msgs
