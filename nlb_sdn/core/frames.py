"""Strict, minimal parsing of punted frames: only the Ethernet, ARP, IPv4 and TCP fields the classifier needs.

Every frame either parses or is rejected with a named reason, so each packet-in is counted exactly once.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from typing import NamedTuple

ETH_HEADER = struct.Struct("!6s6sH")
VLAN_TPID = 0x8100
ETH_TYPE_IP = 0x0800
ETH_TYPE_ARP = 0x0806
ARP_BODY = struct.Struct("!HHBBH6s4s6s4s")
IPV4_FIXED = struct.Struct("!BBHHHBBH4s4s")
TCP_PORTS_SEQ_FLAGS = struct.Struct("!HHIIBB")
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_ACK = 0x10
IPPROTO_TCP = 6


class FrameError(ValueError):
    """A frame the classifier will not act on; ``reason`` is the drop counter's name."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ArpRequest:
    """An ARP request: who has ``target_ip``? tell ``sender_ip`` at ``sender_mac``."""

    sender_mac: str
    sender_ip: str
    target_ip: str


class TcpSegment(NamedTuple):
    """The IPv4/TCP fields of a punted segment (a named tuple: one is made per packet-in, and tuples are cheapest)."""

    src_mac: str
    src_ip: str
    dst_ip: str
    src_port: int
    dst_port: int
    flags: int
    seq: int = 0

    @property
    def is_pure_syn(self) -> bool:
        """True for the first packet of a new connection (SYN without ACK or RST)."""
        return self.flags & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN


def mac_text(raw: bytes) -> str:
    """A 6-byte MAC as lower-case colon-separated hex."""
    return raw.hex(":")


def parse_frame(data: bytes, total_len: int) -> ArpRequest | TcpSegment:
    """Parse a (possibly truncated) frame of original length ``total_len``; raise FrameError to drop it."""
    if len(data) < ETH_HEADER.size:
        raise FrameError("short_ethernet")
    _dst, src, eth_type = ETH_HEADER.unpack_from(data)
    if eth_type == VLAN_TPID:
        raise FrameError("vlan_tagged")
    if eth_type == ETH_TYPE_ARP:
        return _parse_arp(data)
    if eth_type != ETH_TYPE_IP:
        raise FrameError("not_ipv4")
    return _parse_tcp(data, total_len, mac_text(src))


def _parse_arp(data: bytes) -> ArpRequest:
    """Parse an Ethernet/IPv4 ARP request."""
    if len(data) < ETH_HEADER.size + ARP_BODY.size:
        raise FrameError("short_arp")
    hwtype, ptype, hlen, plen, op, sha, spa, _tha, tpa = ARP_BODY.unpack_from(data, ETH_HEADER.size)
    if hwtype != 1 or ptype != ETH_TYPE_IP or hlen != 6 or plen != 4:
        raise FrameError("bad_arp")
    if op != 1:
        raise FrameError("arp_not_request")
    return ArpRequest(mac_text(sha), socket.inet_ntoa(spa), socket.inet_ntoa(tpa))


def _parse_tcp(data: bytes, total_len: int, src_mac: str) -> TcpSegment:
    """Parse the IPv4 and TCP headers of a frame."""
    offset = ETH_HEADER.size
    if len(data) < offset + IPV4_FIXED.size:
        raise FrameError("short_ipv4")
    ver_ihl, _tos, ip_len, _ident, frag, _ttl, proto, _csum, src, dst = IPV4_FIXED.unpack_from(data, offset)
    ihl = (ver_ihl & 0x0F) * 4
    if ver_ihl >> 4 != 4 or ihl < IPV4_FIXED.size:
        raise FrameError("bad_ipv4_header")
    if ip_len < ihl or offset + ip_len > total_len:
        raise FrameError("bad_ipv4_length")
    if frag & 0x3FFF:
        raise FrameError("ip_fragment")
    if proto != IPPROTO_TCP:
        raise FrameError("not_tcp")
    tcp_offset = offset + ihl
    if ip_len < ihl + 20:
        raise FrameError("bad_tcp_length")
    if len(data) < tcp_offset + TCP_PORTS_SEQ_FLAGS.size + 1:
        raise FrameError("short_tcp")
    sport, dport, seq, _ack, data_offset, flags = TCP_PORTS_SEQ_FLAGS.unpack_from(data, tcp_offset)
    if (data_offset >> 4) * 4 < 20 or (data_offset >> 4) * 4 > ip_len - ihl:
        raise FrameError("bad_tcp_header")
    if sport == 0 or dport == 0:
        raise FrameError("bad_tcp_port")
    return TcpSegment(src_mac, socket.inet_ntoa(src), socket.inet_ntoa(dst), sport, dport, flags, seq)
