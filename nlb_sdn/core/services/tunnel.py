"""Tunnel mode (direct server return): the client's packets travel to the member's host under its MPLS label."""

from __future__ import annotations

from nlb_sdn.config import Member
from nlb_sdn.core.context import CoreContext
from nlb_sdn.core.model import VipState
from nlb_sdn.core.services.base import NatService
from nlb_sdn.flows import tunnel
from nlb_sdn.flows.l4 import L4Protocol
from nlb_sdn.flows.pipeline import CookieKind, make_cookie


def tunnel_route(
    ctx: CoreContext, state: VipState, member: Member, client_ip: str, client_port: int
) -> tunnel.TunnelRoute:
    """The label toward the host of ``member`` for one client connection of a tunnel-mode (or l7) VIP service."""
    vip = state.vip
    host_mac = ctx.fabric.hosts_by_ip[member.address].mac
    return tunnel.TunnelRoute(
        client_ip=client_ip,
        client_port=client_port,
        vip_ip=vip.address,
        vip_port=vip.port,
        vip_mac=vip.mac,
        member_address=member.address,
        member_port=member.port,
        member_mac=host_mac,
        cookie=make_cookie(CookieKind.TUNNEL, ctx.lbu_id, state.vip_id, member.endpoint_id),
        idle_timeout=vip.idle_timeout,
        hard_timeout=vip.hard_timeout,
        label=ctx.fabric.labels[host_mac],
        protocol=L4Protocol(vip.protocol),
    )


class TunnelService(NatService):
    """Controller dispatch in tunnel mode: the member's host holds the VIP and answers the client directly."""

    def route(self, member: Member, client_ip: str, client_port: int) -> tunnel.TunnelRoute:
        """The label toward the member's host for one client connection."""
        return tunnel_route(self.ctx, self.state, member, client_ip, client_port)
