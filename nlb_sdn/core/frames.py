"""Ethernet, ARP, IPv4, TCP and UDP frames: strict, minimal parsing of punted frames, and building the frames we send.

Parsing reads only the fields the classifier needs; every frame either parses or is rejected with a named reason, so
each packet-in is counted exactly once. Building makes the controller's ARP replies and health-probe segments (and
test and benchmark traffic) from the same header layouts, byte for byte as os-ken's packet library would.
Pure standard library.
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
TCP_FIXED = struct.Struct("!HHIIBBHHH")
TCP_PSEUDO_HEADER = struct.Struct("!4s4sxBH")
TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_ACK = 0x10
IPPROTO_TCP = 6
IPPROTO_UDP = 17
UDP_HEADER = struct.Struct("!HHHH")
ARP_REQUEST = 1
ARP_REPLY = 2
ARP_HW_ETHERNET = 1
BROADCAST_MAC = "ff:ff:ff:ff:ff:ff"
ZERO_MAC = "00:00:00:00:00:00"
MIN_FRAME_SIZE = 60
"""Shortest Ethernet frame without its FCS: shorter ones are padded with zeros."""
IPV4_VERSION_IHL = 0x45
IPV4_DONT_FRAGMENT = 0x4000
DEFAULT_TTL = 64
DEFAULT_WINDOW = 65535
MSS_OPTION = struct.pack("!BBH", 2, 4, 1460)
"""The TCP option a SYN carries unless told otherwise: maximum segment size 1460."""


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
    ack: int = 0
    proto: int = IPPROTO_TCP
    """The IPv4 protocol: TCP, or UDP (a datagram: no flags, sequence or acknowledgement)."""

    @property
    def is_pure_syn(self) -> bool:
        """True for the first packet of a new connection (SYN without ACK or RST)."""
        return self.flags & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN


def mac_text(raw: bytes) -> str:
    """A 6-byte MAC as lower-case colon-separated hex."""
    return raw.hex(":")


def mac_bytes(text: str) -> bytes:
    """A colon-separated MAC as its 6 bytes."""
    return bytes.fromhex(text.replace(":", ""))


def checksum_fold(total: int) -> int:
    """The Internet checksum of 16-bit words that add up to ``total``."""
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def internet_checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``, padded with a zero byte to whole 16-bit words."""
    if len(data) % 2:
        data += b"\x00"
    return checksum_fold(sum(struct.unpack(f"!{len(data) // 2}H", data)))


def ethernet_frame(dst_mac: str, src_mac: str, eth_type: int, payload: bytes) -> bytes:
    """An Ethernet frame, padded with zeros to :data:`MIN_FRAME_SIZE`."""
    data = ETH_HEADER.pack(mac_bytes(dst_mac), mac_bytes(src_mac), eth_type) + payload
    return data.ljust(MIN_FRAME_SIZE, b"\x00")


def arp_frame(op: int, eth_dst: str, sender_mac: str, sender_ip: str, target_mac: str, target_ip: str) -> bytes:
    """An Ethernet/IPv4 ARP frame (``op`` :data:`ARP_REQUEST` or :data:`ARP_REPLY`) from ``sender_mac``."""
    body = ARP_BODY.pack(
        ARP_HW_ETHERNET,
        ETH_TYPE_IP,
        6,
        4,
        op,
        mac_bytes(sender_mac),
        socket.inet_aton(sender_ip),
        mac_bytes(target_mac),
        socket.inet_aton(target_ip),
    )
    return ethernet_frame(eth_dst, sender_mac, ETH_TYPE_ARP, body)


def arp_request_frame(sender_mac: str, sender_ip: str, target_ip: str) -> bytes:
    """A broadcast ARP request: who has ``target_ip``? tell ``sender_ip`` at ``sender_mac``."""
    return arp_frame(ARP_REQUEST, BROADCAST_MAC, sender_mac, sender_ip, ZERO_MAC, target_ip)


def arp_reply_frame(target_mac: str, target_ip: str, asker_mac: str, asker_ip: str) -> bytes:
    """An ARP reply telling ``asker`` that ``target_ip`` is at ``target_mac``."""
    return arp_frame(ARP_REPLY, asker_mac, target_mac, target_ip, asker_mac, asker_ip)


def tcp_frame(
    src_mac: str,
    dst_mac: str,
    src_ip: str,
    dst_ip: str,
    src_port: int,
    dst_port: int,
    flags: int,
    *,
    seq: int = 0,
    ack: int = 0,
    window: int = DEFAULT_WINDOW,
    ttl: int = DEFAULT_TTL,
    options: bytes | None = None,
    payload: bytes = b"",
    dont_fragment: bool = False,
) -> bytes:
    """An Ethernet/IPv4/TCP frame; ``options`` default to :data:`MSS_OPTION` on a pure SYN and to none otherwise."""
    if options is None:
        options = MSS_OPTION if flags == TCP_SYN else b""
    options += bytes(-len(options) % 4)
    src, dst = socket.inet_aton(src_ip), socket.inet_aton(dst_ip)
    header_size = TCP_FIXED.size + len(options)
    header = TCP_FIXED.pack(src_port, dst_port, seq, ack, header_size // 4 << 4, flags, window, 0, 0) + options
    segment = bytearray(header + payload)
    pseudo = TCP_PSEUDO_HEADER.pack(src, dst, IPPROTO_TCP, len(segment))
    struct.pack_into("!H", segment, 16, internet_checksum(pseudo + segment))
    ip_header = bytearray(
        IPV4_FIXED.pack(
            IPV4_VERSION_IHL,
            0,
            IPV4_FIXED.size + len(segment),
            0,
            IPV4_DONT_FRAGMENT if dont_fragment else 0,
            ttl,
            IPPROTO_TCP,
            0,
            src,
            dst,
        )
    )
    struct.pack_into("!H", ip_header, 10, internet_checksum(bytes(ip_header)))
    return ethernet_frame(dst_mac, src_mac, ETH_TYPE_IP, bytes(ip_header + segment))


def udp_frame(
    src_mac: str,
    dst_mac: str,
    src_ip: str,
    dst_ip: str,
    src_port: int,
    dst_port: int,
    payload: bytes = b"",
    *,
    ttl: int = DEFAULT_TTL,
) -> bytes:
    """An Ethernet/IPv4/UDP frame with its checksums."""
    src, dst = socket.inet_aton(src_ip), socket.inet_aton(dst_ip)
    datagram = bytearray(UDP_HEADER.pack(src_port, dst_port, UDP_HEADER.size + len(payload), 0) + payload)
    pseudo = TCP_PSEUDO_HEADER.pack(src, dst, IPPROTO_UDP, len(datagram))
    struct.pack_into("!H", datagram, 6, internet_checksum(pseudo + datagram) or 0xFFFF)
    ip_header = bytearray(
        IPV4_FIXED.pack(IPV4_VERSION_IHL, 0, IPV4_FIXED.size + len(datagram), 0, 0, ttl, IPPROTO_UDP, 0, src, dst)
    )
    struct.pack_into("!H", ip_header, 10, internet_checksum(bytes(ip_header)))
    return ethernet_frame(dst_mac, src_mac, ETH_TYPE_IP, bytes(ip_header + datagram))


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
    if proto == IPPROTO_UDP:
        return _parse_udp(data, offset + ihl, ip_len - ihl, src_mac, src, dst)
    if proto != IPPROTO_TCP:
        raise FrameError("not_tcp")
    tcp_offset = offset + ihl
    if ip_len < ihl + 20:
        raise FrameError("bad_tcp_length")
    if len(data) < tcp_offset + TCP_PORTS_SEQ_FLAGS.size + 1:
        raise FrameError("short_tcp")
    sport, dport, seq, ack, data_offset, flags = TCP_PORTS_SEQ_FLAGS.unpack_from(data, tcp_offset)
    if (data_offset >> 4) * 4 < 20 or (data_offset >> 4) * 4 > ip_len - ihl:
        raise FrameError("bad_tcp_header")
    if sport == 0 or dport == 0:
        raise FrameError("bad_tcp_port")
    return TcpSegment(src_mac, socket.inet_ntoa(src), socket.inet_ntoa(dst), sport, dport, flags, seq, ack)


def _parse_udp(data: bytes, offset: int, length: int, src_mac: str, src: bytes, dst: bytes) -> TcpSegment:
    """Parse the UDP header at ``offset`` of an IPv4 payload of ``length`` bytes (a segment with no flags)."""
    if length < UDP_HEADER.size:
        raise FrameError("bad_udp_length")
    if len(data) < offset + UDP_HEADER.size:
        raise FrameError("short_udp")
    sport, dport, udp_len, _csum = UDP_HEADER.unpack_from(data, offset)
    if udp_len < UDP_HEADER.size or udp_len > length:
        raise FrameError("bad_udp_length")
    if sport == 0 or dport == 0:
        raise FrameError("bad_udp_port")
    return TcpSegment(src_mac, socket.inet_ntoa(src), socket.inet_ntoa(dst), sport, dport, 0, proto=IPPROTO_UDP)
