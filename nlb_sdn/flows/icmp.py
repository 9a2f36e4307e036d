"""Table 0 entries that punt ICMP for VIPs to the controller, and the packet-out of what the controller answers.

Echo requests to a VIP address (``icmp.answer_ping``) and ICMP errors about a nat VIP's connections go up whole
(up to :data:`ICMP_MAX_LEN` bytes) through the switch's ``control`` meter: errors addressed to the VIP (a router on
the way to a client could not deliver a member's reply) and errors a member sends (about a client's packet to it).
The controller answers, or rewrites and releases them (``core/icmp.py``). docs/pipeline.md lists the entries.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum
from typing import Any, NamedTuple

from nlb_sdn.core.frames import ETH_TYPE_IP
from nlb_sdn.flows.builders import flow_add, flow_delete_strict, punt, resubmit
from nlb_sdn.flows.pipeline import CONTROL_METER_ID, CookieKind, Priority, Table, make_cookie
from nlb_sdn.framework import ofproto_v1_3 as ofp, ofproto_v1_3_parser as parser

IPPROTO_ICMP = 1
ICMP_MAX_LEN = 1514
"""Bytes of a punted ICMP packet the switch sends up: a whole frame of a 1500-byte MTU (a longer echo request is
truncated and not answered; errors quote at most 576 bytes)."""


class IcmpType(IntEnum):
    """The ICMPv4 message types the controller handles."""

    ECHO_REPLY = 0
    DESTINATION_UNREACHABLE = 3
    ECHO_REQUEST = 8
    TIME_EXCEEDED = 11
    PARAMETER_PROBLEM = 12


ERROR_TYPES: tuple[IcmpType, ...] = (
    IcmpType.DESTINATION_UNREACHABLE,
    IcmpType.TIME_EXCEEDED,
    IcmpType.PARAMETER_PROBLEM,
)
"""ICMP errors that quote the packet they are about (RFC 792), relayed with the NAT undone."""


class IcmpPunt(StrEnum):
    """Which ICMP packets one table 0 entry sends to the controller."""

    ECHO_TO_VIP = "echo_to_vip"
    ERROR_TO_VIP = "error_to_vip"
    ERROR_FROM_MEMBER = "error_from_member"


class IcmpEntry(NamedTuple):
    """One punt entry: ``kind`` of ICMP ``icmp_type`` to (or, from a member, from) ``address`` (a tuple: hashed and
    compared in C, as a VIP of 20,000 members wants 60,000 of them)."""

    kind: IcmpPunt
    address: str
    icmp_type: IcmpType

    def match(self) -> Any:
        """The entry's match."""
        end = "ipv4_src" if self.kind == IcmpPunt.ERROR_FROM_MEMBER else "ipv4_dst"
        fields = {"eth_type": ETH_TYPE_IP, "ip_proto": IPPROTO_ICMP, end: self.address, "icmpv4_type": self.icmp_type}
        return parser.OFPMatch(**fields)


def icmp_flow(lbu_id: int, entry: IcmpEntry) -> Any:
    """Table 0 entry punting one kind of ICMP, whole, through the ``control`` meter."""
    return flow_add(
        Table.CLASSIFY,
        Priority.ICMP,
        entry.match(),
        punt(ICMP_MAX_LEN, CONTROL_METER_ID),
        make_cookie(CookieKind.BASE, lbu_id),
    )


def icmp_flow_delete(entry: IcmpEntry) -> Any:
    """Delete one ICMP punt entry."""
    return flow_delete_strict(Table.CLASSIFY, Priority.ICMP, entry.match())


def forward_packet_out(data: bytes) -> Any:
    """Release a packet the controller rewrote toward its destination MAC (table 3), past the punt that sent it up."""
    return parser.OFPPacketOut(
        None, buffer_id=ofp.OFP_NO_BUFFER, in_port=ofp.OFPP_CONTROLLER, actions=[resubmit(Table.FORWARD)], data=data
    )
