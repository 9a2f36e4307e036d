"""Switch-resident dispatch (``dispatch: switch``): the forwarder picks the member and pins the connection itself.

A new connection's SYN meets the VIP's select group. The group has ``SLOTS`` equal buckets; each bucket names a
member (load ``reg0`` with its endpoint id, resubmit to table 6), and the members hold as many buckets as their
allotment share of ``SLOTS``. Open vSwitch hashes the 5-tuple into the buckets, so the shares follow the allotment.
The table 6 entry of the chosen member pins the connection, rewrites the SYN toward the member and forwards it:

- ``conntrack`` pinning: commits the connection to the switch's tracker with destination NAT to the member and the
  member's endpoint id as ``ct_mark``; later packets pass the tracker (tables 8 and 9) and come out NATed. The
  controller hears of the connection from a copy of its SYN (and of its FIN or RST);
- ``learn`` pinning: learns the connection's exact forward entry into table 4 and reverse entry into table 5 (with
  ``client_ip`` affinity also the client's), with NAT (or SESSION) cookies and ``send_flow_rem``, so the controller
  hears of them through flow stats and flow-removed.

Either way nothing a connection was pinned with changes when weights, health or membership do: established
connections stay where they are. See docs/pipeline.md for the measurements behind the two pinnings and why equal
buckets (and not bucket weights).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nlb_sdn.core.frames import TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN
from nlb_sdn.flows.builders import (
    apply,
    flow_add,
    flow_delete,
    flow_delete_strict,
    goto,
    punt,
    resubmit,
    to_controller,
    vip_match,
)
from nlb_sdn.flows.family import AddressFamily, address_int, family_of
from nlb_sdn.flows.l4 import L4Protocol
from nlb_sdn.flows.pipeline import KIND_MASK, MISS_METER_ID, VIP_MASK, CookieKind, Priority, Table, make_cookie
from nlb_sdn.framework import nicira_ext, ofproto_v1_3 as ofp, ofproto_v1_3_parser as parser

SLOTS = 64
"""Buckets per VIP group. Open vSwitch's dp_hash selection maps at most 64 hash values to buckets, and with equal
weights it gives each of 64 buckets exactly one: shares are exact to 1/64 (1.6 points)."""
NX_LEARN_F_SEND_FLOW_REM = 1
NX_NAT_F_DST = 1 << 1
CT_ZONE = 0x4E
"""The conntrack zone of VIP connections (kept apart from any other user of the switch's tracker)."""
CT_TRACKED, CT_NEW, CT_REPLY = 0x20, 0x01, 0x08
COPY_MAX_LEN = 128
"""Bytes of the SYN (and FIN/RST) copies sent to the controller: the headers, options included."""
FIN_IDLE_TIMEOUT = 1
"""Seconds a connection's learned entries live without packets once a FIN or RST passed them: a new connection that
reuses the client port right after goes through the group again instead of riding the old connection's member."""
ENDPOINT_REG = "reg0"
NX_HASH_FIELDS_SYMMETRIC_L3L4_UDP = 3
"""Open vSwitch's hash of addresses, protocol and ports, UDP ports included (``symmetric_l3l4+udp``)."""
SPREAD_BITS = 16
"""Low bits of a UDP datagram's destination address that ``udp_spread`` sets, per flow, before the select group."""


@dataclass(frozen=True, slots=True)
class SwitchVip:
    """What the switch needs to know of a VIP service to dispatch it."""

    lbu_id: int
    vip_id: int
    vip_ip: str
    vip_port: int
    vip_mac: str
    idle_timeout: int
    hard_timeout: int
    client_prefix: int | None = None
    """None: pin each connection; a prefix length: also pin every client of the prefix to one member (client_ip)."""
    session_idle: int = 60
    pinning: str = "learn"
    """``learn`` (learned entries per connection) or ``conntrack`` (the switch's connection tracker, zone CT_ZONE)."""
    protocol: L4Protocol = L4Protocol.TCP
    """TCP, or UDP: every datagram no pinned flow takes goes to the group, and nothing is copied at a flow's end."""
    copies: bool = True
    """Conntrack pinning: copy each connection's SYN and member RST to the controller (``switch_tracking: copies``);
    False (``counters``): copy nothing, the table 6 entry's packet count is the member's connections started."""


@dataclass(frozen=True, slots=True)
class SwitchTarget:
    """One member as the switch rewrites toward it."""

    endpoint_id: int
    member_address: str
    member_port: int
    member_mac: str
    protocol: L4Protocol = L4Protocol.TCP
    copies: bool = True
    """Whether the member's shared conntrack entries copy FIN and RST to the controller (False: they only count)."""


def _ip_int(address: str) -> int:
    """An IPv4 or IPv6 address as an integer (learn loads take integers)."""
    return address_int(address)


def _mac_int(mac: str) -> int:
    """A MAC address as an integer."""
    return int(mac.replace(":", ""), 16)


def _same(name: str, bits: int, offset: int = 0) -> Any:
    """Learn spec: the learned entry matches field ``name`` to this packet's value of it."""
    return parser.NXFlowSpecMatch(src=(name, offset), dst=(name, offset), n_bits=bits)


def _copy(src: str, dst: str, bits: int, offset: int = 0) -> Any:
    """Learn spec: the learned entry matches field ``dst`` to this packet's value of field ``src``."""
    return parser.NXFlowSpecMatch(src=(src, offset), dst=(dst, offset), n_bits=bits)


def _fixed(value: int, name: str, bits: int) -> Any:
    """Learn spec: the learned entry matches field ``name`` to a constant."""
    return parser.NXFlowSpecMatch(src=value, dst=(name, 0), n_bits=bits)


def _load(value: int, name: str, bits: int) -> Any:
    """Learn spec: the learned entry rewrites field ``name`` to a constant."""
    return parser.NXFlowSpecLoad(src=value, dst=(name, 0), n_bits=bits)


def _tcp_ip(family: AddressFamily, protocol: L4Protocol = L4Protocol.TCP) -> list[Any]:
    """Learn specs every learned entry starts with: IPv4 (or IPv6) and TCP or UDP (the match prerequisites)."""
    return [_fixed(family.eth_type, "eth_type_nxm", 16), _fixed(protocol.ip_proto, "ip_proto_nxm", 8)]


def learned_cookie(vip: SwitchVip, target: SwitchTarget, per_client: bool = False) -> int:
    """The cookie of the entries the switch learns for a connection (NAT) or a client (SESSION) of the VIP."""
    kind = CookieKind.SESSION if per_client else CookieKind.NAT
    return make_cookie(kind, vip.lbu_id, vip.vip_id, target.endpoint_id)


def _client_specs(vip: SwitchVip, src: str, dst: str, per_client: bool) -> list[Any]:
    """Learn specs naming the client: its address, or (per client) the prefix ``client_prefix`` of it."""
    bits = family_of(vip.vip_ip).bits
    prefix = min(vip.client_prefix, bits) if per_client and vip.client_prefix is not None else bits
    return [_copy(src, dst, prefix, bits - prefix)] if prefix else []


def learn_forward(vip: SwitchVip, target: SwitchTarget, per_client: bool = False) -> Any:
    """The learn action that pins client->VIP packets (of this connection, or of this client) to ``target``."""
    protocol, family = vip.protocol, family_of(vip.vip_ip)
    specs = _tcp_ip(family, protocol) + _client_specs(vip, family.nxm_src, family.nxm_src, per_client)
    if not per_client:
        specs.append(_same(protocol.nxm_src, 16))
    specs += [
        _fixed(_ip_int(vip.vip_ip), family.nxm_dst, family.bits),
        _fixed(vip.vip_port, protocol.nxm_dst, 16),
        _load(_mac_int(target.member_mac), "eth_dst_nxm", 48),
        _load(_ip_int(target.member_address), family.nxm_dst, family.bits),
        _load(target.member_port, protocol.nxm_dst, 16),
    ]
    return _learn(vip, target, Table.SWITCH_CONNECTIONS, specs, per_client)


def learn_reverse(vip: SwitchVip, target: SwitchTarget, per_client: bool = False) -> Any:
    """The learn action that rewrites the member's replies (to this connection, or to this client) to the VIP."""
    protocol, family = vip.protocol, family_of(vip.vip_ip)
    specs = [
        *_tcp_ip(family, protocol),
        _fixed(_ip_int(target.member_address), family.nxm_src, family.bits),
        _fixed(target.member_port, protocol.nxm_src, 16),
    ]
    specs += _client_specs(vip, family.nxm_src, family.nxm_dst, per_client)
    if not per_client:
        specs.append(_copy(protocol.nxm_src, protocol.nxm_dst, 16))
    specs += [
        _load(_mac_int(vip.vip_mac), "eth_src_nxm", 48),
        _load(_ip_int(vip.vip_ip), family.nxm_src, family.bits),
        _load(vip.vip_port, protocol.nxm_src, 16),
    ]
    return _learn(vip, target, Table.SWITCH_REVERSE, specs, per_client)


def _learn(vip: SwitchVip, target: SwitchTarget, table: Table, specs: list[Any], per_client: bool) -> Any:
    """A learn action with the VIP's timers, the learned cookie and flow-removed notification."""
    return parser.NXActionLearn(
        table_id=int(table),
        specs=specs,
        idle_timeout=vip.session_idle if per_client else vip.idle_timeout,
        hard_timeout=vip.hard_timeout,
        priority=int(Priority.SESSION if per_client else Priority.CONNECTION),
        cookie=learned_cookie(vip, target, per_client),
        flags=NX_LEARN_F_SEND_FLOW_REM,
        fin_idle_timeout=0 if per_client else FIN_IDLE_TIMEOUT,
    )


def learns(vip: SwitchVip, target: SwitchTarget) -> list[Any]:
    """What a SYN's chosen member learns: its connection's two entries and, with client_ip affinity, its client's.

    The connection's own exact entries outrank the client's, so a connection stays put even when SYNs of the same
    client raced through the group to other members and the client's entry ended up naming another one.
    """
    actions = [learn_forward(vip, target), learn_reverse(vip, target)]
    if vip.client_prefix is not None:
        actions += [learn_forward(vip, target, per_client=True), learn_reverse(vip, target, per_client=True)]
    return actions


def dispatch_base_flows(lbu_id: int, max_len: int) -> list[Any]:
    """Table misses of the switch-dispatch tables: an unknown non-SYN goes to the controller (through the switch's miss
    meter); the rest do nothing."""
    cookie = make_cookie(CookieKind.BASE, lbu_id)
    return [
        flow_add(Table.SWITCH_CONNECTIONS, Priority.MISS, parser.OFPMatch(), punt(max_len, MISS_METER_ID), cookie),
        flow_add(Table.SWITCH_REVERSE, Priority.MISS, parser.OFPMatch(), [], cookie),
        flow_add(Table.SWITCH_SELECT, Priority.MISS, parser.OFPMatch(), [], cookie),
    ]


def select_match(vip: SwitchVip, target: SwitchTarget) -> Any:
    """Match a VIP packet whose group bucket chose ``target``."""
    family = family_of(vip.vip_ip)
    return parser.OFPMatch(
        eth_type=family.eth_type,
        ip_proto=vip.protocol.ip_proto,
        reg0=target.endpoint_id,
        **{family.dst: vip.vip_ip},
        **{vip.protocol.dst: vip.vip_port},
    )


def syn_match(vip: SwitchVip) -> Any:
    """Match a pure SYN to the VIP service (UDP: any datagram; learned flow entries rank above it)."""
    if not vip.protocol.has_handshake:
        return vip_match(vip.vip_ip, vip.vip_port, vip.protocol)
    family = family_of(vip.vip_ip)
    return parser.OFPMatch(
        eth_type=family.eth_type,
        ip_proto=vip.protocol.ip_proto,
        **{family.dst: vip.vip_ip},
        tcp_dst=vip.vip_port,
        tcp_flags=(TCP_SYN, TCP_SYN | TCP_ACK),
    )


def select_flows(vip: SwitchVip, targets: list[SwitchTarget]) -> list[Any]:
    """Table 6: per member, learn both directions, rewrite the SYN and forward it."""
    return [
        flow_add(
            Table.SWITCH_SELECT,
            Priority.CONNECTION,
            select_match(vip, target),
            [
                apply(
                    *learns(vip, target),
                    parser.OFPActionSetField(eth_dst=target.member_mac),
                    parser.OFPActionSetField(**{family_of(target.member_address).dst: target.member_address}),
                    parser.OFPActionSetField(**{vip.protocol.dst: target.member_port}),
                    resubmit(Table.FORWARD),
                )
            ],
            make_cookie(CookieKind.BASE, vip.lbu_id, vip.vip_id, target.endpoint_id),
        )
        for target in targets
    ]


def switch_vip_flows(vip: SwitchVip, targets: list[SwitchTarget]) -> list[Any]:
    """The entries of one switch-dispatched VIP service (the group must exist first)."""
    if vip.pinning == "conntrack":
        return ct_vip_flows(vip, targets)
    cookie = make_cookie(CookieKind.BASE, vip.lbu_id, vip.vip_id)
    return [
        flow_add(
            Table.CONNECTIONS,
            Priority.SWITCH_DISPATCH,
            vip_match(vip.vip_ip, vip.vip_port, vip.protocol),
            [apply(resubmit(Table.SWITCH_CONNECTIONS)), goto(Table.FORWARD)],
            cookie,
        ),
        flow_add(
            Table.SWITCH_CONNECTIONS,
            Priority.SWITCH_SYN,
            syn_match(vip),
            [apply(*to_group(vip))],
            cookie,
        ),
        *select_flows(vip, targets),
    ]


def udp_spread() -> Any:
    """Set the low ``SPREAD_BITS`` of a UDP datagram's destination address from a hash of its flow, ports included.

    Open vSwitch's select group hashes (``dp_hash``) addresses and protocol but TCP and SCTP ports only: every UDP
    flow of one client would take one bucket. Going to the group with an address that differs per flow spreads them;
    the bucket puts the VIP address back (``restored``) before anything else sees the datagram.
    """
    return parser.NXActionMultipath(
        fields=NX_HASH_FIELDS_SYMMETRIC_L3L4_UDP,
        basis=0,
        algorithm=nicira_ext.NX_MP_ALG_MODULO_N,
        max_link=(1 << SPREAD_BITS) - 1,
        arg=0,
        ofs_nbits=nicira_ext.ofs_nbits(0, SPREAD_BITS - 1),
        dst="ipv4_dst",
    )


def to_group(vip: SwitchVip) -> list[Any]:
    """The actions that send a new connection (or UDP flow, spread first) of the VIP service to its select group."""
    spread = [] if vip.protocol.has_handshake else [udp_spread()]
    return [*spread, parser.OFPActionGroup(vip.vip_id)]


def restored(vip: SwitchVip) -> str | None:
    """The address a UDP service's group buckets put back (``udp_spread`` changed it); None for TCP."""
    return None if vip.protocol.has_handshake else vip.vip_ip


def group_buckets(slots: list[int], restore: str | None = None) -> list[Any]:
    """One equal-weight bucket per slot, each naming the member (endpoint id) that holds the slot (and, for a UDP
    service, setting the destination back to the VIP address ``restore``)."""
    restore_ip = [] if restore is None else [parser.OFPActionSetField(ipv4_dst=restore)]
    return [
        parser.OFPBucket(
            weight=1,
            watch_port=ofp.OFPP_ANY,
            watch_group=ofp.OFPG_ANY,
            actions=[*restore_ip, parser.OFPActionSetField(reg0=endpoint), resubmit(Table.SWITCH_SELECT)],
        )
        for endpoint in slots
    ]


def group_mod(command: int, vip_id: int, slots: list[int], restore: str | None = None) -> Any:
    """An OFPGroupMod of the VIP's select group (group id = VIP service id)."""
    return parser.OFPGroupMod(None, command, ofp.OFPGT_SELECT, vip_id, group_buckets(slots, restore))


def group_modify(vip_id: int, slots: list[int], restore: str | None = None) -> Any:
    """Give the VIP's group new buckets (a new allotment); learned connections are not affected."""
    return group_mod(ofp.OFPGC_MODIFY, vip_id, slots, restore)


def group_add(vip_id: int, slots: list[int], restore: str | None = None) -> list[Any]:
    """(Re)create the VIP's group: delete whatever a switch has under its id, then add it."""
    return [group_delete(vip_id), group_mod(ofp.OFPGC_ADD, vip_id, slots, restore)]


def group_keep_or_add(vip_id: int, slots: list[int] | None, restore: str | None = None) -> list[Any]:
    """A (re)connecting switch's group of the VIP, never emptied on the way: an add, and a modify when slots are known.

    The add fails (``GROUP_EXISTS``) on a switch that already has the group, which keeps its buckets and goes on
    dispatching with them; on a fresh switch it creates the group. ``slots`` None: the controller does not know the
    members yet (its H&L cache is cold), so only the add, with no bucket, is sent; the first warm tick modifies it.
    """
    if slots is None:
        return [group_mod(ofp.OFPGC_ADD, vip_id, [])]
    return [group_mod(ofp.OFPGC_ADD, vip_id, slots, restore), group_modify(vip_id, slots, restore)]


def group_delete(vip_id: int) -> Any:
    """Delete the VIP's group (and, per OpenFlow, the entries that point at it)."""
    return parser.OFPGroupMod(None, ofp.OFPGC_DELETE, ofp.OFPGT_SELECT, vip_id, [])


def select_flow_strict_deletes(vip: SwitchVip, gone: list[SwitchTarget]) -> list[Any]:
    """Remove the table 6 entries of members that left the pool (their group buckets are gone already)."""
    return [flow_delete_strict(Table.SWITCH_SELECT, Priority.CONNECTION, select_match(vip, target)) for target in gone]


def learned_flow_deletes(lbu_id: int, vip_id: int) -> list[Any]:
    """Remove every connection and session entry the switches learned for a VIP service (the VIP is gone)."""
    return [
        flow_delete(table, make_cookie(kind, lbu_id, vip_id), KIND_MASK | VIP_MASK)
        for table in (Table.SWITCH_CONNECTIONS, Table.SWITCH_REVERSE)
        for kind in (CookieKind.NAT, CookieKind.SESSION)
    ]


def switch_vip_deletes(vip: SwitchVip) -> list[Any]:
    """Stop dispatching the VIP in the switch: its entries in tables 1, 4, 6, 8 and 9 and its group.

    Learned connection entries and tracked connections stay: established connections run on to their end (the
    per-member conntrack entries shared by every conntrack VIP follow ``ct_shared_flows``).
    """
    cookie = make_cookie(CookieKind.BASE, vip.lbu_id, vip.vip_id)
    return [
        flow_delete(table, cookie, KIND_MASK | VIP_MASK)
        for table in (
            Table.CONNECTIONS,
            Table.SWITCH_CONNECTIONS,
            Table.SWITCH_SELECT,
            Table.CT_FORWARD,
            Table.CT_REVERSE,
        )
    ] + [group_delete(vip.vip_id)]


def switch_flow_stats_request() -> Any:
    """Ask for the learned entries of table 4 (the switch's connection table)."""
    return parser.OFPFlowStatsRequest(
        None, 0, int(Table.SWITCH_CONNECTIONS), ofp.OFPP_ANY, ofp.OFPG_ANY, 0, 0, parser.OFPMatch()
    )


def copy_to_controller(clear_register: bool = False) -> list[Any]:
    """Actions sending the controller a header copy whose packet-in carries only in_port (cheap to parse there).

    Open vSwitch puts non-zero pipeline fields (registers, tracker state) into a packet-in's match; clearing them
    first lets the controller's lean packet-in parser take the copy. What follows needs neither: ``reg0`` has
    already selected the table 6 entry, a commit tracks the packet itself, and a tracked packet is already NATed.
    """
    clear = [parser.NXActionCTClear()]
    if clear_register:
        clear.append(parser.OFPActionSetField(reg0=0))
    return [*clear, to_controller(COPY_MAX_LEN)]


def _copied(copies: bool, clear_register: bool = False) -> list[Any]:
    """``copy_to_controller`` for a VIP (or member) tracked by copies; nothing for one tracked by counters."""
    return copy_to_controller(clear_register) if copies else []


def counter_stats_requests() -> list[Any]:
    """Ask for tables 6 and 8, whose per-member entries count the connections of ``switch_tracking: counters`` VIPs."""
    return [
        parser.OFPFlowStatsRequest(None, 0, int(table), ofp.OFPP_ANY, ofp.OFPG_ANY, 0, 0, parser.OFPMatch())
        for table in (Table.SWITCH_SELECT, Table.CT_FORWARD)
    ]


def ct_lookup(table: Table) -> Any:
    """``ct(zone=CT_ZONE, nat, table=T)``: find the packet's tracked connection, apply its NAT, go on at ``table``."""
    return parser.NXActionCT(
        flags=0,
        zone_src="",
        zone_ofs_nbits=CT_ZONE,
        recirc_table=int(table),
        alg=0,
        actions=[parser.NXActionNAT(flags=0)],
    )


def ct_commit(target: SwitchTarget) -> Any:
    """Track a new connection with destination NAT to the member, and the member's endpoint id as its mark.

    The NAT range gives the address once (no maximum means the minimum): with both it is 28 bytes, which os-ken
    announces as 32 without writing the padding, and the switch rejects the action (BAD_LEN). An IPv6 range with the
    ports is 36 bytes whatever it gives, so there the nat goes last, where the ct action's own padding completes it.
    """
    mark = parser.OFPActionSetField(ct_mark=target.endpoint_id)
    nat = parser.NXActionNAT(
        flags=NX_NAT_F_DST,
        **{family_of(target.member_address).nat_range_min: target.member_address},
        range_proto_min=target.member_port,
        range_proto_max=target.member_port,
    )
    return parser.NXActionCT(
        flags=nicira_ext.NX_CT_F_COMMIT,
        zone_src="",
        zone_ofs_nbits=CT_ZONE,
        recirc_table=nicira_ext.NX_CT_RECIRC_NONE,
        alg=0,
        actions=[mark, nat] if family_of(target.member_address) is AddressFamily.IPV6 else [nat, mark],
    )


def _ct_match(
    state: int, protocol: L4Protocol = L4Protocol.TCP, family: AddressFamily = AddressFamily.IPV4, **fields: Any
) -> Any:
    """Match TCP (or UDP) packets of ``family`` whose tracker state has all the ``state`` bits."""
    return parser.OFPMatch(eth_type=family.eth_type, ip_proto=protocol.ip_proto, ct_state=(state, state), **fields)


def _ct_new_match(vip: SwitchVip) -> Any:
    """Match a VIP service's packets the tracker has not seen: a pure SYN, or any UDP datagram of a new flow."""
    syn = {"tcp_flags": (TCP_SYN, TCP_SYN | TCP_ACK)} if vip.protocol.has_handshake else {}
    family = family_of(vip.vip_ip)
    return _ct_match(
        CT_TRACKED | CT_NEW, vip.protocol, family, **{family.dst: vip.vip_ip}, **{vip.protocol.dst: vip.vip_port}, **syn
    )


def ct_vip_flows(vip: SwitchVip, targets: list[SwitchTarget]) -> list[Any]:
    """A conntrack-pinned VIP service: through the tracker in table 1; new SYNs to the group; commits in table 6.

    Table 6's commit entry first sends the controller a copy of the SYN (its cookie names VIP and member), so the
    controller learns of every connection without being on its path; a member's RST is copied too (it ends one).
    A UDP service's first datagram of each flow is copied the same way; its flows end by idling out (audits).
    With ``copies`` False nothing is copied: the commit entry's packet count is the member's connections started.
    """
    cookie = make_cookie(CookieKind.BASE, vip.lbu_id, vip.vip_id)
    protocol, family = vip.protocol, family_of(vip.vip_ip)
    reply = {family.src: vip.vip_ip, protocol.src: vip.vip_port}
    msgs = [
        flow_add(
            Table.CONNECTIONS,
            Priority.SWITCH_DISPATCH,
            vip_match(vip.vip_ip, vip.vip_port, protocol),
            [apply(ct_lookup(Table.CT_FORWARD))],
            cookie,
        ),
        flow_add(
            Table.CT_FORWARD,
            Priority.SWITCH_DISPATCH,
            _ct_new_match(vip),
            [apply(*to_group(vip))],
            cookie,
        ),
        flow_add(
            Table.CT_REVERSE,
            Priority.CONNECTION,
            _ct_match(CT_TRACKED | CT_REPLY, protocol, family, **reply),
            [apply(parser.OFPActionSetField(eth_src=vip.vip_mac), resubmit(Table.FORWARD))],
            cookie,
        ),
    ]
    if protocol.has_handshake:
        msgs.append(
            flow_add(
                Table.CT_REVERSE,
                Priority.CT_END,
                _ct_match(CT_TRACKED | CT_REPLY, protocol, family, **reply, tcp_flags=(TCP_RST, TCP_RST)),
                [apply(*_copied(vip.copies), parser.OFPActionSetField(eth_src=vip.vip_mac), resubmit(Table.FORWARD))],
                cookie,
            )
        )
    for target in targets:
        msgs.append(
            flow_add(
                Table.SWITCH_SELECT,
                Priority.CONNECTION,
                select_match(vip, target),
                [
                    apply(
                        *_copied(vip.copies, clear_register=True),
                        ct_commit(target),
                        parser.OFPActionSetField(eth_dst=target.member_mac),
                        resubmit(Table.FORWARD),
                    )
                ],
                make_cookie(CookieKind.BASE, vip.lbu_id, vip.vip_id, target.endpoint_id),
            )
        )
    return msgs


def ct_base_flows(lbu_id: int) -> list[Any]:
    """Misses of the conntrack tables: anything the tracker does not place goes on as if it had not been there."""
    cookie = make_cookie(CookieKind.BASE, lbu_id)
    return [
        flow_add(
            Table.CT_FORWARD,
            Priority.MISS,
            parser.OFPMatch(),
            [apply(resubmit(Table.SWITCH_CONNECTIONS), resubmit(Table.FORWARD))],
            cookie,
        ),
        flow_add(Table.CT_REVERSE, Priority.MISS, parser.OFPMatch(), [apply(resubmit(Table.REVERSE))], cookie),
    ]


def ct_shared_flows(lbu_id: int, targets: list[SwitchTarget]) -> list[Any]:
    """Per member of any conntrack VIP: its replies go through the tracker; its tracked packets get its MAC.

    The tracked-connection entries send the controller a copy of FIN and RST segments (the connection ends); for a
    member only ``counters`` VIPs use they copy nothing and their packet counts are its connections' ends.
    These entries are shared by every conntrack VIP the member serves; their cookies carry the endpoint id only.
    """
    msgs: list[Any] = []
    for target in sorted({t.endpoint_id: t for t in targets}.values(), key=lambda t: t.endpoint_id):
        cookie = make_cookie(CookieKind.BASE, lbu_id, 0, target.endpoint_id)
        family = family_of(target.member_address)
        to_member = [parser.OFPActionSetField(eth_dst=target.member_mac), resubmit(Table.FORWARD)]
        committed = CT_TRACKED  # the mark says the switch committed it; a retransmitted SYN is still "new"
        msgs += [
            flow_add(
                Table.CLASSIFY,
                Priority.CT_REPLY,
                member_reply_match(target),
                [apply(ct_lookup(Table.CT_REVERSE))],
                cookie,
            ),
            flow_add(
                Table.CT_FORWARD,
                Priority.CONNECTION,
                _ct_match(committed, target.protocol, family, ct_mark=target.endpoint_id),
                [apply(*to_member)],
                cookie,
            ),
        ]
        for flag in (TCP_FIN, TCP_RST) if target.protocol.has_handshake else ():
            msgs.append(
                flow_add(
                    Table.CT_FORWARD,
                    Priority.CT_END,
                    _ct_match(committed, target.protocol, family, ct_mark=target.endpoint_id, tcp_flags=(flag, flag)),
                    [apply(*_copied(target.copies), *to_member)],
                    cookie,
                )
            )
    return msgs


def ct_audit_flow(vip: SwitchVip, target: SwitchTarget, client_ip: str, client_port: int) -> Any:
    """An exact table 8 entry for one conntrack-pinned connection that has lived ``idle_timeout`` seconds.

    It forwards as the member's shared entry does, and tells the controller (flow-removed) when the connection has
    been idle for ``idle_timeout``: the backstop for a connection whose FIN and RST copies never arrived. FIN and
    RST segments still meet the copying entries above it. Table 8 sees the connection already NATed to the member.
    """
    protocol, family = vip.protocol, family_of(target.member_address)
    match = _ct_match(
        CT_TRACKED,
        protocol,
        family,
        ct_mark=target.endpoint_id,
        **{family.src: client_ip, family.dst: target.member_address},
        **{protocol.src: client_port, protocol.dst: target.member_port},
    )
    return flow_add(
        Table.CT_FORWARD,
        Priority.CT_AUDIT,
        match,
        [apply(parser.OFPActionSetField(eth_dst=target.member_mac), resubmit(Table.FORWARD))],
        make_cookie(CookieKind.NAT, vip.lbu_id, vip.vip_id, target.endpoint_id),
        idle_timeout=vip.idle_timeout,
        flags=ofp.OFPFF_SEND_FLOW_REM,
    )


def member_reply_match(target: SwitchTarget) -> Any:
    """Match what a member sends from its service port (its replies)."""
    protocol, family = target.protocol, family_of(target.member_address)
    return parser.OFPMatch(
        eth_type=family.eth_type,
        ip_proto=protocol.ip_proto,
        **{family.src: target.member_address},
        **{protocol.src: target.member_port},
    )
