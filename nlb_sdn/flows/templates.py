"""Prepared OpenFlow 1.3 messages for the packet-in path: a connection's flow-mods and packet-out, packed from bytes.

``builders`` stays the one definition of every flow. Building a connection's two flow-mods with it and letting the
framework serialise them costs about 100 µs (OFPMatch and set-field normalisation, netaddr, per-field packing); here
they are serialised once per member route (everything but the client's address and port) and then packed per
connection: a copy of the template and ``struct.pack_into`` of the client fields. The xid is packed when the message
is serialised for its datapath.

The messages are still the framework's message classes (subclasses that keep their names, so counters and tests that
name message types see flow-mods and packet-outs): ``serialize()`` packs the prepared bytes, and the os-ken fields
(``match``, ``instructions``, ``actions``, ...) are decoded from those same bytes with the framework's parser the first
time anything reads them, so whatever inspects or applies them (the fake OpenFlow switch of the tests) sees exactly
what goes on the wire.
"""

from __future__ import annotations

import functools
import socket
import struct
from typing import Any

from nlb_sdn.flows import builders
from nlb_sdn.flows.family import family_of
from nlb_sdn.flows.l4 import L4Protocol
from nlb_sdn.framework import ofproto_v1_3 as ofp, ofproto_v1_3_parser as parser

XID = struct.Struct("!I")
XID_OFFSET = 4
PORT = struct.Struct("!H")
MATCH_HEADER = struct.Struct("!HH")
OXM_HEADER = struct.Struct("!HBB")
FLOW_MOD_MATCH_OFFSET = ofp.OFP_FLOW_MOD_SIZE - ofp.OFP_MATCH_SIZE
PACKET_OUT_HEAD = struct.Struct("!" + ofp.OFP_HEADER_PACK_STR[1:] + ofp.OFP_PACKET_OUT_PACK_STR[1:])
OUTPUT_TO_TABLE = struct.pack(
    ofp.OFP_ACTION_OUTPUT_PACK_STR, ofp.OFPAT_OUTPUT, ofp.OFP_ACTION_OUTPUT_SIZE, ofp.OFPP_TABLE, ofp.OFPCML_MAX
)
TEMPLATE_CACHE_SIZE = 4096
PORT_FIELDS = {
    L4Protocol.TCP: (ofp.OFPXMT_OFB_TCP_SRC, ofp.OFPXMT_OFB_TCP_DST),
    L4Protocol.UDP: (ofp.OFPXMT_OFB_UDP_SRC, ofp.OFPXMT_OFB_UDP_DST),
}
"""The OXM field numbers of each protocol's (source, destination) port: where a template leaves the client port."""
_FlowModBase: Any = parser.OFPFlowMod
_PacketOutBase: Any = parser.OFPPacketOut
FLOW_MOD_FIELDS = (
    "cookie",
    "cookie_mask",
    "table_id",
    "command",
    "idle_timeout",
    "hard_timeout",
    "priority",
    "buffer_id",
    "out_port",
    "out_group",
    "flags",
    "match",
    "instructions",
)


class Prepared:
    """Mixin of a message whose bytes are prepared: ``wire`` (xid 0); decoded fields appear on first read."""

    wire: bytes | bytearray
    buf: bytearray | None
    decoded_fields: tuple[str, ...] = ()

    def serialize(self) -> None:
        """Pack the prepared bytes with this message's xid into ``buf`` (what ``Datapath.send_msg`` sends)."""
        self.buf = self.packed()

    def packed(self) -> bytearray:
        """The prepared bytes with this message's xid: what :meth:`serialize` puts in ``buf``."""
        buf = bytearray(self.wire)
        XID.pack_into(buf, XID_OFFSET, self.xid or 0)
        return buf

    def decode(self) -> Any:
        """The framework's message object parsed from ``wire``."""
        raise NotImplementedError

    def __getattr__(self, name: str) -> Any:
        """Decode the os-ken fields from the prepared bytes the first time one is read."""
        if name not in type(self).decoded_fields:
            raise AttributeError(name)
        decoded = self.decode()
        for field in type(self).decoded_fields:
            setattr(self, field, getattr(decoded, field))
        return getattr(self, name)

    def __str__(self) -> str:
        """The framework's text form, with every field decoded."""
        getattr(self, type(self).decoded_fields[0])
        return super().__str__()


class OFPFlowMod(Prepared, _FlowModBase):  # type: ignore[misc]  # os-ken's classes are untyped (Any)
    """An OFPFlowMod packed from a template (the same class name on purpose, see the module docstring)."""

    decoded_fields = FLOW_MOD_FIELDS

    def __init__(self, wire: bytes | bytearray) -> None:  # no super().__init__(): fields come from wire
        self.datapath = None
        self.version = ofp.OFP_VERSION
        self.msg_type = ofp.OFPT_FLOW_MOD
        self.msg_len = len(wire)
        self.xid = None
        self.buf = None
        self.wire = wire

    def decode(self) -> Any:
        """The flow-mod as the framework's parser reads it from ``wire``."""
        wire = bytes(self.wire)
        return parser.OFPFlowMod.parser(None, ofp.OFP_VERSION, ofp.OFPT_FLOW_MOD, len(wire), 0, wire)


class OFPPacketOut(Prepared, _PacketOutBase):  # type: ignore[misc]  # os-ken's classes are untyped (Any)
    """An OFPPacketOut of a frame with prepared actions (``output:TABLE`` by default), packed at once (the same class
    name on purpose)."""

    decoded_fields = ("actions", "actions_len")

    def __init__(self, in_port: int, data: bytes, actions: bytes = OUTPUT_TO_TABLE) -> None:  # fields come from wire
        self.datapath = None
        self.version = ofp.OFP_VERSION
        self.msg_type = ofp.OFPT_PACKET_OUT
        self.xid = None
        self.buf = None
        self.buffer_id = ofp.OFP_NO_BUFFER
        self.in_port = in_port
        self.data = data
        self.msg_len = PACKET_OUT_HEAD.size + len(actions) + len(data)
        self.wire = (
            PACKET_OUT_HEAD.pack(
                ofp.OFP_VERSION, ofp.OFPT_PACKET_OUT, self.msg_len, 0, ofp.OFP_NO_BUFFER, in_port, len(actions)
            )
            + actions
            + data
        )

    def decode(self) -> Any:
        """The packet-out's actions as the framework's action parser reads them (os-ken parses no packet-outs)."""
        return parse_packet_out(self.wire)


def parse_packet_out(wire: bytes | bytearray) -> Any:
    """An OFPPacketOut read back from its bytes (the framework has no parser for this controller-to-switch message)."""
    (_version, _msg_type, msg_len, xid, buffer_id, in_port, actions_len) = PACKET_OUT_HEAD.unpack_from(wire)
    actions, offset = [], PACKET_OUT_HEAD.size
    while offset < PACKET_OUT_HEAD.size + actions_len:
        action = parser.OFPAction.parser(wire, offset)
        actions.append(action)
        offset += action.len
    msg = parser.OFPPacketOut(
        None, buffer_id=buffer_id, in_port=in_port, actions=actions, data=bytes(wire[offset:msg_len])
    )
    msg.xid = xid
    msg.actions_len = actions_len
    return msg


def oxm_value_offsets(wire: bytes | bytearray, match_offset: int) -> dict[int, int]:
    """Where the value of each unmasked OpenFlow-basic field of the ofp_match at ``match_offset`` is, by field."""
    _type, length = MATCH_HEADER.unpack_from(wire, match_offset)
    offsets: dict[int, int] = {}
    offset, end = match_offset + MATCH_HEADER.size, match_offset + length
    while offset < end:
        oxm_class, field_and_mask, value_len = OXM_HEADER.unpack_from(wire, offset)
        if oxm_class == ofp.OFPXMC_OPENFLOW_BASIC and not field_and_mask & 1:
            offsets[field_and_mask >> 1] = offset + OXM_HEADER.size
        offset += OXM_HEADER.size + value_len
    return offsets


def serialised(msg: Any) -> bytes:
    """What the framework serialises for ``msg`` with xid 0."""
    msg.datapath = _Protocol
    msg.xid = 0
    msg.serialize()
    return bytes(msg.buf)


class _Protocol:
    """The protocol modules the framework's serialisers read from a datapath."""

    ofproto = ofp
    ofproto_parser = parser


class NatTemplate:
    """A connection's two flow-mods (``builders.nat_connection_flows``) serialised once, with the client left open."""

    __slots__ = ("family", "forward", "forward_ip", "forward_port", "reverse", "reverse_ip", "reverse_port")

    def __init__(self, route: builders.NatRoute) -> None:
        forward, reverse = (bytearray(serialised(msg)) for msg in builders.nat_connection_flows(route))
        forward_fields = oxm_value_offsets(forward, FLOW_MOD_MATCH_OFFSET)
        reverse_fields = oxm_value_offsets(reverse, FLOW_MOD_MATCH_OFFSET)
        self.family = family_of(route.vip_ip).socket_family
        ipv6 = self.family == socket.AF_INET6
        self.forward, self.reverse = forward, reverse
        src_port, dst_port = PORT_FIELDS[route.protocol]
        self.forward_ip = forward_fields[ofp.OFPXMT_OFB_IPV6_SRC if ipv6 else ofp.OFPXMT_OFB_IPV4_SRC]
        self.forward_port = forward_fields[src_port]
        self.reverse_ip = reverse_fields[ofp.OFPXMT_OFB_IPV6_DST if ipv6 else ofp.OFPXMT_OFB_IPV4_DST]
        self.reverse_port = reverse_fields[dst_port]

    def flow_mods(self, client_ip: str, client_port: int) -> list[Any]:
        """The forward and reverse flow-mods of the client's connection."""
        address = socket.inet_pton(self.family, client_ip)
        size = len(address)
        forward, reverse = bytearray(self.forward), bytearray(self.reverse)
        forward[self.forward_ip : self.forward_ip + size] = address
        PORT.pack_into(forward, self.forward_port, client_port)
        reverse[self.reverse_ip : self.reverse_ip + size] = address
        PORT.pack_into(reverse, self.reverse_port, client_port)
        return [OFPFlowMod(forward), OFPFlowMod(reverse)]


@functools.lru_cache(maxsize=TEMPLATE_CACHE_SIZE)
def nat_template(
    vip_ip: str,
    vip_port: int,
    vip_mac: str,
    member_address: str,
    member_port: int,
    member_mac: str,
    cookie: int,
    idle_timeout: int,
    hard_timeout: int,
    protocol: L4Protocol = L4Protocol.TCP,
) -> NatTemplate:
    """The template of one member route (everything of a NatRoute but the client), made once and then cached."""
    return NatTemplate(
        builders.NatRoute(
            "::" if ":" in vip_ip else "0.0.0.0",
            0,
            vip_ip,
            vip_port,
            vip_mac,
            member_address,
            member_port,
            member_mac,
            cookie,
            idle_timeout,
            hard_timeout,
            protocol,
        )
    )


def nat_connection_flows(route: builders.NatRoute) -> list[Any]:
    """``builders.nat_connection_flows(route)``, prepared from the template of the route's member."""
    return nat_template(
        route.vip_ip,
        route.vip_port,
        route.vip_mac,
        route.member_address,
        route.member_port,
        route.member_mac,
        route.cookie,
        route.idle_timeout,
        route.hard_timeout,
        route.protocol,
    ).flow_mods(route.client_ip, route.client_port)


def packet_out_table(in_port: int, data: bytes) -> Any:
    """``builders.packet_out_table(in_port, data)``, prepared."""
    return OFPPacketOut(in_port, data)


@functools.lru_cache(maxsize=TEMPLATE_CACHE_SIZE)
def _to_member_actions(
    member_mac: str, member_address: str, member_port: int, protocol: L4Protocol = L4Protocol.TCP
) -> bytes:
    """The serialised actions of ``builders.nat_packet_out`` toward one member (no client field in them)."""
    route = builders.NatRoute(
        "0.0.0.0", 0, "0.0.0.0", 0, "00:00:00:00:00:00", member_address, member_port, member_mac, 0, 0, 0, protocol
    )
    wire = serialised(builders.nat_packet_out(route, 0, b""))
    return wire[PACKET_OUT_HEAD.size :]


def nat_packet_out(route: builders.NatRoute, in_port: int, data: bytes) -> Any:
    """``builders.nat_packet_out(route, in_port, data)``, prepared."""
    return OFPPacketOut(
        in_port, data, _to_member_actions(route.member_mac, route.member_address, route.member_port, route.protocol)
    )
