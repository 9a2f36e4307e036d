"""l7 mode (FIG. 33): a new connection is tunnelled to a request router, which later migrates it to a member."""

from __future__ import annotations

from nlb_sdn.core import l7
from nlb_sdn.core.context import CoreContext
from nlb_sdn.core.effects import Out
from nlb_sdn.core.frames import TcpSegment
from nlb_sdn.core.model import Connection, PacketIn, VipState
from nlb_sdn.core.refusals import RefusalReason, refuse
from nlb_sdn.core.services.tunnel import TunnelService


class L7Service(TunnelService):
    """A VIP service whose connections start at a request router (3302) and move to members by migration."""

    reuse_keeps_member = False
    """A new connection always starts at a router, never at the host the ended one moved to."""

    def __init__(self, ctx: CoreContext, state: VipState, picker: l7.RouterPicker) -> None:
        super().__init__(ctx, state)
        self.picker = picker

    def new_connection(self, pkt: PacketIn, out: Out) -> None:
        """Tunnel a new connection to a live request router, the ingress switch's first."""
        ctx, vip = self.ctx, self.state.vip
        statuses = {host_id: entry.status for host_id, entry in ctx.health.cache.hosts.items()}
        routers = l7.live_routers(l7.vip_routers(vip, ctx.config.fabric), statuses)
        router = self.picker.pick(vip.name, routers, ctx.fabric.switch_name(pkt.dpid))
        if router is None:
            refuse(ctx, vip.name, RefusalReason.NO_ROUTER, pkt)
            return
        target = l7.router_member(vip, router)
        self.track(pkt, target, self.route(target, pkt.segment.src_ip, pkt.segment.src_port), out)

    def reused_ports(self, conn: Connection, seg: TcpSegment) -> bool:
        """A known connection that has already moved to a host (only after its handshake) never takes a SYN."""
        return conn.member not in self.state.vip.routers or super().reused_ports(conn, seg)
