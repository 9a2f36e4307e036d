"""Pure flow builders: they return os-ken OpenFlow 1.3 messages with no datapath bound.

The app shell binds ``msg.datapath`` just before sending (see ``bind``). Nothing here touches the network.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from nlb_sdn.config import PROBE_PORT_BASE, PROBE_PORT_MASK
from nlb_sdn.core.frames import (
    ETH_TYPE_ARP,
    ETH_TYPE_IP,
    ETH_TYPE_IPV6,
    ICMPV6_NEIGHBOR_SOLICIT,
    IPPROTO_ICMPV6,
    IPPROTO_TCP,
    TCP_ACK,
    TCP_SYN,
    arp_reply_frame as arp_reply_frame,  # the frame module's, re-exported for the core
    neighbor_advert_frame as neighbor_advert_frame,  # the same, for the neighbour-discovery responder
)
from nlb_sdn.flows.family import family_of
from nlb_sdn.flows.l4 import L4Protocol
from nlb_sdn.flows.pipeline import (
    CONTROL_METER_ID,
    KIND_MASK,
    METER_BURST_DIVISOR,
    MISS_METER_ID,
    VIP_MASK,
    CookieKind,
    Priority,
    Table,
    make_cookie,
    vip_meter_id,
)
from nlb_sdn.framework import ofproto_v1_3 as ofp, ofproto_v1_3_parser as parser

PROBE_MAX_LEN = 128
NX_IN_PORT = 0xFFF8
"""Resubmit's 16-bit port meaning "the packet's own in_port" (OpenFlow 1.0 numbering, as the Nicira action uses)."""


@dataclass(frozen=True, slots=True)
class NatRoute:
    """Everything needed to plumb one connection in nat mode, both directions."""

    client_ip: str
    client_port: int
    vip_ip: str
    vip_port: int
    vip_mac: str
    member_address: str
    member_port: int
    member_mac: str
    cookie: int
    idle_timeout: int
    hard_timeout: int
    protocol: L4Protocol = L4Protocol.TCP


def bind(msgs: Iterable[Any], datapath: Any) -> list[Any]:
    """Attach a datapath to built messages so they can be serialised and sent."""
    bound = list(msgs)
    for msg in bound:
        msg.datapath = datapath
    return bound


def flow_add(
    table: Table,
    priority: int,
    match: Any,
    instructions: list[Any],
    cookie: int,
    idle_timeout: int = 0,
    hard_timeout: int = 0,
    flags: int = 0,
) -> Any:
    """An OFPFC_ADD flow-mod."""
    return parser.OFPFlowMod(
        None,
        cookie=cookie,
        table_id=int(table),
        command=ofp.OFPFC_ADD,
        idle_timeout=idle_timeout,
        hard_timeout=hard_timeout,
        priority=int(priority),
        buffer_id=ofp.OFP_NO_BUFFER,
        out_port=ofp.OFPP_ANY,
        out_group=ofp.OFPG_ANY,
        flags=flags,
        match=match,
        instructions=instructions,
    )


def flow_delete(table: int, cookie: int, cookie_mask: int, match: Any | None = None) -> Any:
    """A non-strict OFPFC_DELETE of every flow in ``table`` whose cookie matches under ``cookie_mask``."""
    return parser.OFPFlowMod(
        None,
        cookie=cookie,
        cookie_mask=cookie_mask,
        table_id=int(table),
        command=ofp.OFPFC_DELETE,
        out_port=ofp.OFPP_ANY,
        out_group=ofp.OFPG_ANY,
        match=match or parser.OFPMatch(),
    )


def flow_delete_strict(table: int, priority: int, match: Any) -> Any:
    """An OFPFC_DELETE_STRICT of exactly one flow."""
    return parser.OFPFlowMod(
        None,
        table_id=int(table),
        command=ofp.OFPFC_DELETE_STRICT,
        priority=int(priority),
        out_port=ofp.OFPP_ANY,
        out_group=ofp.OFPG_ANY,
        match=match,
    )


def match_from_fields(fields: dict[str, Any]) -> Any:
    """An OFPMatch from field values as os-ken reports them (masked fields as (value, mask))."""
    return parser.OFPMatch(**{name: tuple(v) if isinstance(v, list) else v for name, v in fields.items()})


def flow_stats_request() -> Any:
    """Ask for every flow of every table (to reconcile a switch with the model)."""
    return parser.OFPFlowStatsRequest(None, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY, 0, 0, parser.OFPMatch())


def connection_stats_request(route: NatRoute) -> Any:
    """Ask for one controller-plumbed connection's forward entry (its packet count tells a finished handshake)."""
    return parser.OFPFlowStatsRequest(
        None, 0, int(Table.CONNECTIONS), ofp.OFPP_ANY, ofp.OFPG_ANY, 0, 0, forward_match(route)
    )


def apply(*actions: Any) -> Any:
    """An APPLY_ACTIONS instruction."""
    return parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, list(actions))


def goto(table: Table) -> Any:
    """A GOTO_TABLE instruction."""
    return parser.OFPInstructionGotoTable(int(table))


def resubmit(table: Table) -> Any:
    """Open vSwitch's resubmit: look the packet up in ``table`` and come back (tables may go backwards)."""
    return parser.NXActionResubmitTable(in_port=NX_IN_PORT, table_id=int(table))


def to_controller(max_len: int) -> Any:
    """Output to the controller, truncated to ``max_len`` bytes."""
    return parser.OFPActionOutput(ofp.OFPP_CONTROLLER, max_len)


def punt(max_len: int, meter_id: int) -> list[Any]:
    """The instructions of a punt-only entry: through meter ``meter_id`` (over its rate: dropped), to the controller."""
    return [parser.OFPInstructionMeter(meter_id, ofp.OFPIT_METER), apply(to_controller(max_len))]


def meter_mod(meter_id: int, rate: int, command: int = ofp.OFPMC_ADD) -> Any:
    """An OFPMeterMod of a packets-per-second drop meter, burst a fraction of a second of ``rate``."""
    burst = max(1, rate // METER_BURST_DIVISOR)
    return parser.OFPMeterMod(
        None,
        command=command,
        flags=ofp.OFPMF_PKTPS | ofp.OFPMF_BURST,
        meter_id=meter_id,
        bands=[parser.OFPMeterBandDrop(rate=rate, burst_size=burst)],
    )


def meter_delete(meter_id: int) -> Any:
    """Delete a meter (``OFPM_ALL``: every meter); the switch removes the flows that use it."""
    return parser.OFPMeterMod(None, command=ofp.OFPMC_DELETE, meter_id=meter_id)


def switch_meters(miss_rate: int, control_rate: int) -> list[Any]:
    """A (re)connecting switch's meters start afresh: every old one deleted, then the switch-wide punt meters."""
    return [meter_delete(ofp.OFPM_ALL), meter_mod(MISS_METER_ID, miss_rate), meter_mod(CONTROL_METER_ID, control_rate)]


def vip_meter(vip_id: int, rate: int) -> Any:
    """The meter of a VIP service's SYN punts."""
    return meter_mod(vip_meter_id(vip_id), rate)


def vip_meter_delete(vip_id: int) -> Any:
    """Delete a VIP service's SYN meter (and, at the switch, its SYN entry with it)."""
    return meter_delete(vip_meter_id(vip_id))


def base_flows(lbu_id: int, max_len: int, ipv6: bool = False) -> list[Any]:
    """The VIP-independent pipeline skeleton: ARP punt, IPv4 to reverse NAT, table misses (``ipv6``: also the
    neighbour solicitation punt and IPv6 to reverse NAT, for a dual-stack model).

    VIP packets that miss the controller's connection entries (table 1) are looked up in the switch-learned ones
    (table 4), whose miss punts them; replies that miss the controller's reverse entries (table 2) are looked up in
    the switch-learned ones (table 5). So connections a switch learned keep running whichever way the VIP dispatches.
    """
    cookie = make_cookie(CookieKind.BASE, lbu_id)
    return [
        flow_add(
            Table.CLASSIFY,
            Priority.ARP,
            parser.OFPMatch(eth_type=ETH_TYPE_ARP),
            punt(max_len, CONTROL_METER_ID),
            cookie,
        ),
        flow_add(
            Table.CLASSIFY, Priority.ETH_TYPE, parser.OFPMatch(eth_type=ETH_TYPE_IP), [goto(Table.REVERSE)], cookie
        ),
        *(ipv6_base_flows(cookie, max_len) if ipv6 else []),
        flow_add(Table.CLASSIFY, Priority.MISS, parser.OFPMatch(), [], cookie),
        flow_add(
            Table.CONNECTIONS, Priority.NEW_CONNECTION, new_connection_match(), punt(max_len, MISS_METER_ID), cookie
        ),
        flow_add(
            Table.CONNECTIONS,
            Priority.MISS,
            parser.OFPMatch(),
            [apply(resubmit(Table.SWITCH_CONNECTIONS)), goto(Table.FORWARD)],
            cookie,
        ),
        flow_add(
            Table.REVERSE,
            Priority.MISS,
            parser.OFPMatch(),
            [apply(resubmit(Table.SWITCH_REVERSE)), goto(Table.FORWARD)],
            cookie,
        ),
        flow_add(Table.FORWARD, Priority.MISS, parser.OFPMatch(), [], cookie),
    ]


def ipv6_base_flows(cookie: int, max_len: int) -> list[Any]:
    """The base entries of a dual-stack model: neighbour solicitations punted (the controller answers them as it
    answers ARP), other IPv6 to reverse NAT, and table 1's punt of IPv6 pure SYNs."""
    return [
        flow_add(
            Table.CLASSIFY,
            Priority.ARP,
            neighbor_solicit_match(),
            punt(max_len, CONTROL_METER_ID),
            cookie,
        ),
        flow_add(
            Table.CLASSIFY, Priority.ETH_TYPE, parser.OFPMatch(eth_type=ETH_TYPE_IPV6), [goto(Table.REVERSE)], cookie
        ),
        flow_add(
            Table.CONNECTIONS,
            Priority.NEW_CONNECTION,
            new_connection_match(ETH_TYPE_IPV6),
            punt(max_len, MISS_METER_ID),
            cookie,
        ),
    ]


def neighbor_solicit_match() -> Any:
    """Match ICMPv6 neighbour solicitations (IPv6's ARP requests)."""
    return parser.OFPMatch(eth_type=ETH_TYPE_IPV6, ip_proto=IPPROTO_ICMPV6, icmpv6_type=ICMPV6_NEIGHBOR_SOLICIT)


def new_connection_match(eth_type: int = ETH_TYPE_IP) -> Any:
    """Match pure SYNs (SYN set, ACK clear) of IPv4 (or ``eth_type``: IPv6).

    Punting SYNs through their own entry makes OVS put the TCP flags into the datapath megaflow of the punt, so the
    connection's later segments never match that cached punt while the revalidators catch up with the new flows.
    """
    return parser.OFPMatch(eth_type=eth_type, ip_proto=IPPROTO_TCP, tcp_flags=(TCP_SYN, TCP_SYN | TCP_ACK))


def vip_match(vip_ip: str, vip_port: int, protocol: L4Protocol = L4Protocol.TCP) -> Any:
    """Match the VIP service (IPv4 or IPv6, its protocol, destination VIP:port)."""
    family = family_of(vip_ip)
    return parser.OFPMatch(
        eth_type=family.eth_type, ip_proto=protocol.ip_proto, **{family.dst: vip_ip}, **{protocol.dst: vip_port}
    )


def vip_other_match(vip_ip: str) -> Any:
    """Match anything else sent to the VIP address."""
    family = family_of(vip_ip)
    return parser.OFPMatch(eth_type=family.eth_type, **{family.dst: vip_ip})


def vip_flows(lbu_id: int, vip_id: int, vip_ip: str, vip_port: int, protocol: L4Protocol = L4Protocol.TCP) -> list[Any]:
    """Table 0 entries of one VIP service: its traffic goes to the connection table; other VIP traffic drops.

    The drop entry and the punt of health-probe replies (TCP to the VIP address at a probe port) are shared by every
    VIP service on the address, so their cookies carry no VIP id.
    """
    return [
        flow_add(
            Table.CLASSIFY,
            Priority.VIP_SERVICE,
            vip_match(vip_ip, vip_port, protocol),
            [goto(Table.CONNECTIONS)],
            make_cookie(CookieKind.BASE, lbu_id, vip_id),
        ),
        flow_add(Table.CLASSIFY, Priority.VIP_OTHER, vip_other_match(vip_ip), [], make_cookie(CookieKind.BASE, lbu_id)),
        flow_add(
            Table.CLASSIFY,
            Priority.PROBE_REPLY,
            probe_reply_match(vip_ip, PROBE_PORT_BASE, PROBE_PORT_MASK),
            punt(PROBE_MAX_LEN, CONTROL_METER_ID),
            make_cookie(CookieKind.BASE, lbu_id),
        ),
    ]


def vip_syn_match(vip_ip: str, vip_port: int, protocol: L4Protocol = L4Protocol.TCP) -> Any:
    """Match a pure SYN to one VIP service (a UDP service: any datagram to it, as its flows start with any)."""
    if not protocol.has_handshake:
        return vip_match(vip_ip, vip_port, protocol)
    family = family_of(vip_ip)
    return parser.OFPMatch(
        eth_type=family.eth_type,
        ip_proto=IPPROTO_TCP,
        **{family.dst: vip_ip},
        tcp_dst=vip_port,
        tcp_flags=(TCP_SYN, TCP_SYN | TCP_ACK),
    )


def vip_syn_priority(protocol: L4Protocol) -> int:
    """Where a VIP service's punt entry ranks in table 1: a SYN's above the connection entries, a UDP datagram's
    below them (and below the session entries), as only datagrams of flows with no entry yet may go up."""
    return Priority.VIP_SYN if protocol.has_handshake else Priority.VIP_DATAGRAM


def vip_syn_flow(lbu_id: int, vip_id: int, vip_ip: str, vip_port: int, protocol: L4Protocol = L4Protocol.TCP) -> Any:
    """Table 1 entry of a VIP service the controller dispatches per connection: every pure SYN goes to the controller,
    above the connection entries.

    A client may open a new connection from the port of one that ended while that connection's entry still lives
    (until it idles out). Riding the entry, its SYN would reach the old member even if that member was drained or
    removed meanwhile, and for an ``l7`` service it would reach a host without any rule deciding. The SYN goes up
    whole (a SYN with data, TCP Fast Open, may be longer than ``packet_in_max_len``): it can always be released.
    It goes through the VIP service's meter (``vip_meter``): a SYN flood costs the controller at most its rate.
    A UDP service's entry punts, below its flows' entries, the datagrams no flow entry took: one per new flow.
    """
    return flow_add(
        Table.CONNECTIONS,
        vip_syn_priority(protocol),
        vip_syn_match(vip_ip, vip_port, protocol),
        punt(ofp.OFPCML_NO_BUFFER, vip_meter_id(vip_id)),
        make_cookie(CookieKind.BASE, lbu_id, vip_id),
    )


def vip_syn_delete(vip_ip: str, vip_port: int, protocol: L4Protocol = L4Protocol.TCP) -> Any:
    """Remove a VIP service's SYN entry."""
    return flow_delete_strict(Table.CONNECTIONS, vip_syn_priority(protocol), vip_syn_match(vip_ip, vip_port, protocol))


def vip_flow_deletes(
    lbu_id: int,
    vip_id: int,
    vip_ip: str,
    vip_port: int,
    still_used_ips: set[str],
    protocol: L4Protocol = L4Protocol.TCP,
) -> list[Any]:
    """Remove one VIP service's table 0 entries and every connection flow that carries its VIP id."""
    msgs = [flow_delete_strict(Table.CLASSIFY, Priority.VIP_SERVICE, vip_match(vip_ip, vip_port, protocol))]
    if vip_ip not in still_used_ips:
        msgs.append(flow_delete_strict(Table.CLASSIFY, Priority.VIP_OTHER, vip_other_match(vip_ip)))
        msgs.append(
            flow_delete_strict(
                Table.CLASSIFY, Priority.PROBE_REPLY, probe_reply_match(vip_ip, PROBE_PORT_BASE, PROBE_PORT_MASK)
            )
        )
    vip_cookie = make_cookie(CookieKind.NAT, lbu_id, vip_id)
    for table in (Table.CONNECTIONS, Table.REVERSE):
        msgs.append(flow_delete(table, vip_cookie, KIND_MASK | VIP_MASK))
    return msgs


def forward_flows(lbu_id: int, mac_ports: dict[str, int]) -> list[Any]:
    """Table 3 entries: one per known destination MAC, out of the port toward it."""
    cookie = make_cookie(CookieKind.FABRIC, lbu_id)
    return [
        flow_add(
            Table.FORWARD, Priority.FORWARD, parser.OFPMatch(eth_dst=mac), [apply(parser.OFPActionOutput(port))], cookie
        )
        for mac, port in sorted(mac_ports.items())
    ]


def forward_delete(mac: str) -> Any:
    """Remove the table 3 entry toward ``mac`` (no live path leads there any more)."""
    return flow_delete_strict(Table.FORWARD, Priority.FORWARD, parser.OFPMatch(eth_dst=mac))


def exact_tcp_match(
    src_ip: str, dst_ip: str, src_port: int, dst_port: int, protocol: L4Protocol = L4Protocol.TCP
) -> Any:
    """Match one direction of one TCP connection (or UDP flow) exactly.

    The fields are given already in OXM order and in os-ken's user form, which skips OFPMatch's per-field
    normalisation: on the packet-in path that normalisation cost more than everything else the classifier does.
    """
    if ":" in src_ip:
        return parser.OFPMatch(
            _ordered_fields=[
                ("eth_type", ETH_TYPE_IPV6),
                ("ip_proto", protocol.ip_proto),
                (protocol.src, src_port),
                (protocol.dst, dst_port),
                ("ipv6_src", src_ip),
                ("ipv6_dst", dst_ip),
            ]
        )
    return parser.OFPMatch(
        _ordered_fields=[
            ("eth_type", ETH_TYPE_IP),
            ("ip_proto", protocol.ip_proto),
            ("ipv4_src", src_ip),
            ("ipv4_dst", dst_ip),
            (protocol.src, src_port),
            (protocol.dst, dst_port),
        ]
    )


def forward_match(route: NatRoute) -> Any:
    """Match client→VIP packets of one connection."""
    return exact_tcp_match(route.client_ip, route.vip_ip, route.client_port, route.vip_port, route.protocol)


def reverse_match(route: NatRoute) -> Any:
    """Match member→client packets of one connection."""
    return exact_tcp_match(route.member_address, route.client_ip, route.member_port, route.client_port, route.protocol)


def _nat_pair(route: NatRoute, priority: int, forward: Any, reverse: Any) -> list[Any]:
    """Flows for the two directions: matches of ``forward`` rewritten to the member, of ``reverse`` back to the VIP."""
    flags = ofp.OFPFF_SEND_FLOW_REM
    return [
        flow_add(
            Table.CONNECTIONS,
            priority,
            forward,
            [apply(*to_member_actions(route)), goto(Table.FORWARD)],
            route.cookie,
            route.idle_timeout,
            route.hard_timeout,
            flags,
        ),
        flow_add(
            Table.REVERSE,
            priority,
            reverse,
            [
                apply(
                    parser.OFPActionSetField(eth_src=route.vip_mac),
                    parser.OFPActionSetField(**{family_of(route.vip_ip).src: route.vip_ip}),
                    parser.OFPActionSetField(**{route.protocol.src: route.vip_port}),
                ),
                goto(Table.FORWARD),
            ],
            route.cookie,
            route.idle_timeout,
            route.hard_timeout,
            flags,
        ),
    ]


def to_member_actions(route: NatRoute) -> list[Any]:
    """The rewrite of a client's packet to the VIP toward the route's member."""
    return [
        parser.OFPActionSetField(eth_dst=route.member_mac),
        parser.OFPActionSetField(**{family_of(route.member_address).dst: route.member_address}),
        parser.OFPActionSetField(**{route.protocol.dst: route.member_port}),
    ]


def nat_packet_out(route: NatRoute, in_port: int, data: bytes) -> Any:
    """Release a punted client packet as the connection's entry would forward it (rewrite, then table 3).

    A SYN released through table 0 instead would meet the VIP's SYN entry again (``vip_syn_flow``).
    """
    return parser.OFPPacketOut(
        None,
        buffer_id=ofp.OFP_NO_BUFFER,
        in_port=in_port,
        actions=[*to_member_actions(route), resubmit(Table.FORWARD)],
        data=data,
    )


def nat_connection_flows(route: NatRoute) -> list[Any]:
    """Both directions of one connection: client→VIP rewritten to the member, member→client back to the VIP."""
    return _nat_pair(route, Priority.CONNECTION, forward_match(route), reverse_match(route))


def nat_connection_deletes(route: NatRoute, learned: bool = False) -> list[Any]:
    """Strict deletes of both directions of one connection (``learned``: the entries the switch learned itself)."""
    forward, reverse = (
        (Table.SWITCH_CONNECTIONS, Table.SWITCH_REVERSE) if learned else (Table.CONNECTIONS, Table.REVERSE)
    )
    return [
        flow_delete_strict(forward, Priority.CONNECTION, forward_match(route)),
        flow_delete_strict(reverse, Priority.CONNECTION, reverse_match(route)),
    ]


def _client_field(client: str) -> Any:
    """An address match value for a client address or prefix (``a.b.c.d``, ``a.b.c.d/len``, IPv6 alike)."""
    if "/" not in client:
        return client
    network = ipaddress.ip_network(client)
    return (str(network.network_address), str(network.netmask))


def session_forward_match(client: str, vip_ip: str, vip_port: int, protocol: L4Protocol = L4Protocol.TCP) -> Any:
    """Match every connection of a client (or client prefix) to the VIP service."""
    family = family_of(vip_ip)
    return parser.OFPMatch(
        eth_type=family.eth_type,
        ip_proto=protocol.ip_proto,
        **{family.src: _client_field(client), family.dst: vip_ip},
        **{protocol.dst: vip_port},
    )


def session_reverse_match(
    client: str, member_address: str, member_port: int, protocol: L4Protocol = L4Protocol.TCP
) -> Any:
    """Match every reply of the member to a client (or client prefix)."""
    family = family_of(member_address)
    return parser.OFPMatch(
        eth_type=family.eth_type,
        ip_proto=protocol.ip_proto,
        **{family.src: member_address, family.dst: _client_field(client)},
        **{protocol.src: member_port},
    )


def session_flows(client: str, route: NatRoute) -> list[Any]:
    """Per-session flows: all of a client's connections to the VIP bypass the classifier, both directions."""
    return _nat_pair(
        route,
        Priority.SESSION,
        session_forward_match(client, route.vip_ip, route.vip_port, route.protocol),
        session_reverse_match(client, route.member_address, route.member_port, route.protocol),
    )


def packet_out_table(in_port: int, data: bytes) -> Any:
    """Release a packet into the pipeline from table 0, as if it had just arrived on ``in_port``."""
    return parser.OFPPacketOut(
        None, buffer_id=ofp.OFP_NO_BUFFER, in_port=in_port, actions=[parser.OFPActionOutput(ofp.OFPP_TABLE)], data=data
    )


def packet_out_port(out_port: int, data: bytes) -> Any:
    """Send a controller-made packet out of one port."""
    return parser.OFPPacketOut(
        None,
        buffer_id=ofp.OFP_NO_BUFFER,
        in_port=ofp.OFPP_CONTROLLER,
        actions=[parser.OFPActionOutput(out_port)],
        data=data,
    )


def probe_reply_match(vip_ip: str, probe_base: int, probe_mask: int) -> Any:
    """Match replies to the controller's health probes: TCP to the VIP address from a probe port range."""
    family = family_of(vip_ip)
    return parser.OFPMatch(
        eth_type=family.eth_type, ip_proto=IPPROTO_TCP, **{family.dst: vip_ip}, tcp_dst=(probe_base, probe_mask)
    )
