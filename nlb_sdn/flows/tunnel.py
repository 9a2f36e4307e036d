"""Tunnel mode (``mode: tunnel``): client packets travel to the chosen host under an MPLS label naming the host.

The forwarder that classified the SYN pushes the label of the member's host (table 1, one entry per connection, one
direction). Every switch forwards labelled packets on the label alone (table 7, one entry per fabric host, along the
same shortest-path trees as table 3); the host's own edge pops the label and addresses the frame to the host, whose
stack sees client -> VIP unchanged (the VIP sits on its loopback). The host answers the client directly with the VIP
as source (direct server return), so replies are plain IPv4 and meet no VIP entry. See docs/pipeline.md.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from nlb_sdn.config import Config, Fabric
from nlb_sdn.core.frames import ETH_TYPE_IP
from nlb_sdn.flows.builders import (
    NatRoute,
    apply,
    flow_add,
    flow_delete,
    flow_delete_strict,
    forward_match,
    goto,
    nat_connection_flows,
    resubmit,
)
from nlb_sdn.flows.pipeline import KIND_MASK, VIP_MASK, CookieKind, Priority, Table, make_cookie
from nlb_sdn.framework import ofproto_v1_3 as ofp, ofproto_v1_3_parser as parser

ETH_TYPE_MPLS = 0x8847
LABEL_BASE = 0x10000
"""A host's label is LABEL_BASE plus the low 16 bits of its address: 10.0.0.11 is 0x1000b (clear of reserved 0-15)."""
LABEL_OVERFLOW = 0x20000
"""Where hosts whose low 16 bits collide (fabrics wider than a /16) take their labels, in address order."""


@dataclass(frozen=True, slots=True)
class TunnelRoute(NatRoute):
    """A connection in tunnel mode: the client->VIP match plus the label of the member's host (no rewrite)."""

    label: int = 0


@dataclass(frozen=True, slots=True)
class LabelHop:
    """What one switch does with one host's label: send it out of ``port``; pop it there when ``host_mac`` is set."""

    label: int
    port: int
    host_mac: str | None = None


def uses_tunnels(config: Config) -> bool:
    """Whether any VIP service tunnels (tunnel or l7 mode; only then do switches get the label entries)."""
    return any(vip.mode in ("tunnel", "l7") for vip in config.vips)


def host_labels(fabric: Fabric) -> dict[str, int]:
    """The MPLS label of every fabric host, by MAC: stable while the host keeps its address.

    Labels are ``LABEL_BASE`` plus the low 16 bits of the address; a host whose low 16 bits another host (lower in
    address order) already has takes the next label from ``LABEL_OVERFLOW`` on.
    """
    labels: dict[str, int] = {}
    taken: set[int] = set()
    overflow = LABEL_OVERFLOW
    for host in sorted(fabric.hosts, key=lambda h: ipaddress.IPv4Address(h.ip)):
        label = LABEL_BASE | (int(ipaddress.IPv4Address(host.ip)) & 0xFFFF)
        if label in taken:
            label, overflow = overflow, overflow + 1
        taken.add(label)
        labels[host.mac] = label
    return labels


def label_hops(fabric: Fabric, dpid: int, ports: dict[str, int], labels: dict[str, int]) -> list[LabelHop]:
    """One switch's label entries: toward every host it has a path to (``ports``: table 3's MAC -> port)."""
    dpids = {switch.name: switch.dpid for switch in fabric.switches}
    return [
        LabelHop(labels[host.mac], ports[host.mac], host.mac if dpids[host.switch] == dpid else None)
        for host in fabric.hosts
        if host.mac in ports and host.mac in labels
    ]


def tunnel_base_flows(lbu_id: int) -> list[Any]:
    """Table 0 sends labelled packets to the label table; table 7 drops labels it does not know."""
    cookie = make_cookie(CookieKind.BASE, lbu_id)
    return [
        flow_add(
            Table.CLASSIFY, Priority.ETH_TYPE, parser.OFPMatch(eth_type=ETH_TYPE_MPLS), [goto(Table.TUNNEL)], cookie
        ),
        flow_add(Table.TUNNEL, Priority.MISS, parser.OFPMatch(), [], cookie),
    ]


def tunnel_base_deletes() -> list[Any]:
    """Remove what ``tunnel_base_flows`` installs (the last tunnel-mode VIP service is gone)."""
    return [
        flow_delete_strict(Table.CLASSIFY, Priority.ETH_TYPE, parser.OFPMatch(eth_type=ETH_TYPE_MPLS)),
        flow_delete_strict(Table.TUNNEL, Priority.MISS, parser.OFPMatch()),
    ]


def label_match(label: int) -> Any:
    """Match packets carrying ``label`` as their outer MPLS label."""
    return parser.OFPMatch(eth_type=ETH_TYPE_MPLS, mpls_label=label)


def label_flows(lbu_id: int, hops: list[LabelHop]) -> list[Any]:
    """Table 7 entries: a host's label goes toward the host; on the host's own edge it is popped for the host."""
    cookie = make_cookie(CookieKind.FABRIC, lbu_id)
    msgs = []
    for hop in sorted(hops, key=lambda h: h.label):
        actions: list[Any] = [parser.OFPActionOutput(hop.port)]
        if hop.host_mac is not None:
            actions = [parser.OFPActionPopMpls(ETH_TYPE_IP), parser.OFPActionSetField(eth_dst=hop.host_mac), *actions]
        msgs.append(flow_add(Table.TUNNEL, Priority.TUNNEL_LABEL, label_match(hop.label), [apply(*actions)], cookie))
    return msgs


def label_delete(label: int) -> Any:
    """Remove the table 7 entry of one label (no live path leads to its host any more)."""
    return flow_delete_strict(Table.TUNNEL, Priority.TUNNEL_LABEL, label_match(label))


def label_deletes() -> list[Any]:
    """Remove every label entry (before the entries of a changed fabric go in, or with the last tunnel VIP)."""
    return [flow_delete(Table.TUNNEL, make_cookie(CookieKind.FABRIC), KIND_MASK)]


def tunnel_connection_flows(route: TunnelRoute) -> list[Any]:
    """The one entry of a tunnel connection: client->VIP packets get the host's label and go to the label table."""
    return [
        flow_add(
            Table.CONNECTIONS,
            Priority.CONNECTION,
            forward_match(route),
            [
                apply(parser.OFPActionPushMpls(ETH_TYPE_MPLS), parser.OFPActionSetField(mpls_label=route.label)),
                goto(Table.TUNNEL),
            ],
            route.cookie,
            route.idle_timeout,
            route.hard_timeout,
            ofp.OFPFF_SEND_FLOW_REM,
        )
    ]


def tunnel_packet_out(route: TunnelRoute, in_port: int, data: bytes) -> Any:
    """Release a punted packet with its connection entry's own actions: the host's label, then the label table.

    Released through table 0 a SYN would meet the VIP's SYN entry (``builders.vip_syn_flow``) again.
    """
    return parser.OFPPacketOut(
        None,
        buffer_id=ofp.OFP_NO_BUFFER,
        in_port=in_port,
        actions=[
            parser.OFPActionPushMpls(ETH_TYPE_MPLS),
            parser.OFPActionSetField(mpls_label=route.label),
            resubmit(Table.TUNNEL),
        ],
        data=data,
    )


def tunnel_connection_deletes(route: TunnelRoute) -> list[Any]:
    """Strict delete of a tunnel connection's entry."""
    return [flow_delete_strict(Table.CONNECTIONS, Priority.CONNECTION, forward_match(route))]


def tunnel_vip_deletes(lbu_id: int, vip_id: int) -> list[Any]:
    """Remove every tunnel connection entry of one VIP service."""
    return [flow_delete(Table.CONNECTIONS, make_cookie(CookieKind.TUNNEL, lbu_id, vip_id), KIND_MASK | VIP_MASK)]


def connection_flows(route: NatRoute) -> list[Any]:
    """The flows of one connection in its mode: one tunnel entry, or the nat pair."""
    if isinstance(route, TunnelRoute):
        return tunnel_connection_flows(route)
    return nat_connection_flows(route)


def route_mode(route: NatRoute) -> str:
    """The forwarding mode a route is plumbed in: ``tunnel`` or ``nat``."""
    return "tunnel" if isinstance(route, TunnelRoute) else "nat"
