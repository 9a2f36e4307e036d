"""The ARP and neighbour-discovery responder: the controller answers for VIPs, fabric hosts and gateways, so nothing
is ever flooded."""

from __future__ import annotations

from nlb_sdn.core.context import CoreContext
from nlb_sdn.core.effects import Out
from nlb_sdn.core.frames import ArpRequest, NeighborSolicitation
from nlb_sdn.core.manager import Manager
from nlb_sdn.flows import builders


class ArpResponder(Manager):
    """Answers ARP requests (VIPs, fabric hosts, gateways: ``FabricView.gateway_arp_mac``) and IPv6 neighbour
    solicitations (VIPs, fabric hosts) from the model."""

    def __init__(self, ctx: CoreContext) -> None:
        self.ctx = ctx

    def packet_in(self, request: ArpRequest, dpid: int, in_port: int, out: Out) -> None:
        """Answer one request out of the port it came in on (unknown targets are counted and dropped)."""
        ctx = self.ctx
        target = request.target_ip
        mac = (
            ctx.vips.vip_mac(target)
            or ctx.fabric.host_macs.get(target)
            or ctx.fabric.gateway_arp_mac(target, dpid, in_port)
        )
        if mac is None:
            ctx.counters.dropped["arp_unknown_target"] += 1
            return
        ctx.counters.packet_in["arp"] += 1
        frame = builders.arp_reply_frame(mac, target, request.sender_mac, request.sender_ip)
        out.send(dpid, [builders.packet_out_port(in_port, frame)])

    def solicitation(self, request: NeighborSolicitation, dpid: int, in_port: int, out: Out) -> None:
        """Answer one neighbour solicitation with an advertisement out of the port it came in on."""
        ctx = self.ctx
        mac = ctx.vips.vip_mac(request.target_ip) or ctx.fabric.host_macs.get(request.target_ip)
        if mac is None:
            ctx.counters.dropped["ndp_unknown_target"] += 1
            return
        ctx.counters.packet_in["ndp"] += 1
        frame = builders.neighbor_advert_frame(mac, request.target_ip, request.sender_mac, request.sender_ip)
        out.send(dpid, [builders.packet_out_port(in_port, frame)])
