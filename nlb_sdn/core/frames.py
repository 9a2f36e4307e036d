"""Ethernet, ARP, IPv4, IPv6 (neighbour discovery included), TCP and UDP frames: strict, minimal parsing of punted
frames, and building the frames we send.

Parsing reads only the fields the classifier needs; every frame either parses or is rejected with a named reason, so
each packet-in is counted exactly once. Building makes the controller's ARP replies and health-probe segments (and
test and benchmark traffic) from the same header layouts, byte for byte as os-ken's packet library would.
Pure standard library.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass
from typing import NamedTuple

ETH_HEADER = struct.Struct("!6s6sH")
VLAN_TPID = 0x8100
ETH_TYPE_IP = 0x0800
ETH_TYPE_ARP = 0x0806
ETH_TYPE_IPV6 = 0x86DD
ARP_BODY = struct.Struct("!HHBBH6s4s6s4s")
IPV4_FIXED = struct.Struct("!BBHHHBBH4s4s")
TCP_PORTS_SEQ_FLAGS = struct.Struct("!HHIIBB")
TCP_FIXED = struct.Struct("!HHIIBBHHH")
TCP_PSEUDO_HEADER = struct.Struct("!4s4sxBH")
IPV6_FIXED = struct.Struct("!IHBB16s16s")
IPV6_PSEUDO_HEADER = struct.Struct("!16s16sI3xB")
IPV6_VERSION_WORD = 6 << 28
IPPROTO_ICMPV6 = 58
ICMPV6_NEIGHBOR_SOLICIT = 135
ICMPV6_NEIGHBOR_ADVERT = 136
NDP_BODY = struct.Struct("!BBHI16s")
"""ICMPv6 type, code, checksum, flags (neighbour advertisement) or reserved (solicitation), target address."""
NDP_LINK_LAYER_OPTION = struct.Struct("!BB6s")
NDP_SOURCE_LINK_LAYER = 1
NDP_TARGET_LINK_LAYER = 2
NDP_HOP_LIMIT = 255
"""Neighbour discovery travels with hop limit 255 (RFC 4861): a receiver drops anything else."""
SOLICITED_NODE_PREFIX = socket.inet_pton(socket.AF_INET6, "ff02::1:ff00:0")[:13]
"""The first 104 bits of a solicited-node multicast address (RFC 4291), where a neighbour solicitation goes."""
NA_SOLICITED_OVERRIDE = 0x60000000
"""The solicited and override flags of a neighbour advertisement."""
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


@dataclass(frozen=True, slots=True)
class NeighborSolicitation:
    """An ICMPv6 neighbour solicitation: who has ``target_ip``? tell ``sender_ip`` at ``sender_mac``."""

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


def neighbor_advert_frame(target_mac: str, target_ip: str, asker_mac: str, asker_ip: str) -> bytes:
    """A solicited neighbour advertisement telling ``asker`` that ``target_ip`` is at ``target_mac`` (RFC 4861)."""
    src, dst = socket.inet_pton(socket.AF_INET6, target_ip), socket.inet_pton(socket.AF_INET6, asker_ip)
    body = bytearray(
        NDP_BODY.pack(ICMPV6_NEIGHBOR_ADVERT, 0, 0, NA_SOLICITED_OVERRIDE, src)
        + NDP_LINK_LAYER_OPTION.pack(NDP_TARGET_LINK_LAYER, 1, mac_bytes(target_mac))
    )
    pseudo = IPV6_PSEUDO_HEADER.pack(src, dst, len(body), IPPROTO_ICMPV6)
    struct.pack_into("!H", body, 2, internet_checksum(pseudo + bytes(body)))
    header = IPV6_FIXED.pack(IPV6_VERSION_WORD, len(body), IPPROTO_ICMPV6, NDP_HOP_LIMIT, src, dst)
    return ethernet_frame(asker_mac, target_mac, ETH_TYPE_IPV6, header + bytes(body))


def neighbor_solicit_frame(sender_mac: str, sender_ip: str, target_ip: str) -> bytes:
    """A neighbour solicitation for ``target_ip`` to its solicited-node multicast group (tests and the lab)."""
    target = socket.inet_pton(socket.AF_INET6, target_ip)
    src = socket.inet_pton(socket.AF_INET6, sender_ip)
    dst = SOLICITED_NODE_PREFIX + target[13:]
    body = bytearray(
        NDP_BODY.pack(ICMPV6_NEIGHBOR_SOLICIT, 0, 0, 0, target)
        + NDP_LINK_LAYER_OPTION.pack(NDP_SOURCE_LINK_LAYER, 1, mac_bytes(sender_mac))
    )
    pseudo = IPV6_PSEUDO_HEADER.pack(src, dst, len(body), IPPROTO_ICMPV6)
    struct.pack_into("!H", body, 2, internet_checksum(pseudo + bytes(body)))
    header = IPV6_FIXED.pack(IPV6_VERSION_WORD, len(body), IPPROTO_ICMPV6, NDP_HOP_LIMIT, src, dst)
    multicast_mac = "33:33:" + dst[12:].hex(":")
    return ethernet_frame(multicast_mac, sender_mac, ETH_TYPE_IPV6, header + bytes(body))


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
    """An Ethernet/IPv4/TCP frame (IPv6 when the addresses are); ``options`` default to :data:`MSS_OPTION` on a pure
    SYN and to none otherwise."""
    if options is None:
        options = MSS_OPTION if flags == TCP_SYN else b""
    options += bytes(-len(options) % 4)
    header_size = TCP_FIXED.size + len(options)
    header = TCP_FIXED.pack(src_port, dst_port, seq, ack, header_size // 4 << 4, flags, window, 0, 0) + options
    segment = bytearray(header + payload)
    if ":" in src_ip:
        src6, dst6 = socket.inet_pton(socket.AF_INET6, src_ip), socket.inet_pton(socket.AF_INET6, dst_ip)
        pseudo6 = IPV6_PSEUDO_HEADER.pack(src6, dst6, len(segment), IPPROTO_TCP)
        struct.pack_into("!H", segment, 16, internet_checksum(pseudo6 + segment))
        ip6_header = IPV6_FIXED.pack(IPV6_VERSION_WORD, len(segment), IPPROTO_TCP, ttl, src6, dst6)
        return ethernet_frame(dst_mac, src_mac, ETH_TYPE_IPV6, ip6_header + bytes(segment))
    src, dst = socket.inet_aton(src_ip), socket.inet_aton(dst_ip)
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


def parse_frame(data: bytes, total_len: int) -> ArpRequest | NeighborSolicitation | TcpSegment:
    """Parse a (possibly truncated) frame of original length ``total_len``; raise FrameError to drop it."""
    if len(data) < ETH_HEADER.size:
        raise FrameError("short_ethernet")
    _dst, src, eth_type = ETH_HEADER.unpack_from(data)
    if eth_type == VLAN_TPID:
        raise FrameError("vlan_tagged")
    if eth_type == ETH_TYPE_ARP:
        return _parse_arp(data)
    if eth_type == ETH_TYPE_IPV6:
        return _parse_ipv6(data, total_len, mac_text(src))
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
    return _tcp_segment(data, tcp_offset, ip_len - ihl, src_mac, socket.inet_ntoa(src), socket.inet_ntoa(dst))


def _tcp_segment(data: bytes, tcp_offset: int, tcp_len: int, src_mac: str, src_ip: str, dst_ip: str) -> TcpSegment:
    """The TCP header at ``tcp_offset``, of a segment ``tcp_len`` bytes long (IP payload), as a TcpSegment."""
    if len(data) < tcp_offset + TCP_PORTS_SEQ_FLAGS.size + 1:
        raise FrameError("short_tcp")
    sport, dport, seq, ack, data_offset, flags = TCP_PORTS_SEQ_FLAGS.unpack_from(data, tcp_offset)
    if (data_offset >> 4) * 4 < 20 or (data_offset >> 4) * 4 > tcp_len:
        raise FrameError("bad_tcp_header")
    if sport == 0 or dport == 0:
        raise FrameError("bad_tcp_port")
    return TcpSegment(src_mac, src_ip, dst_ip, sport, dport, flags, seq, ack)


def _parse_ipv6(data: bytes, total_len: int, src_mac: str) -> NeighborSolicitation | TcpSegment:
    """Parse the IPv6 header and a TCP segment or neighbour solicitation right after it (no extension headers)."""
    offset = ETH_HEADER.size
    if len(data) < offset + IPV6_FIXED.size:
        raise FrameError("short_ipv6")
    word, payload_len, next_header, hop_limit, src, dst = IPV6_FIXED.unpack_from(data, offset)
    if word >> 28 != 6:
        raise FrameError("bad_ipv6_header")
    if offset + IPV6_FIXED.size + payload_len > total_len:
        raise FrameError("bad_ipv6_length")
    src_ip, dst_ip = str(ipaddress.IPv6Address(src)), str(ipaddress.IPv6Address(dst))
    if next_header == IPPROTO_ICMPV6:
        return _parse_neighbor_solicit(data, offset + IPV6_FIXED.size, hop_limit, src_mac, src_ip)
    if next_header != IPPROTO_TCP:
        raise FrameError("not_tcp")
    if payload_len < 20:
        raise FrameError("bad_tcp_length")
    return _tcp_segment(data, offset + IPV6_FIXED.size, payload_len, src_mac, src_ip, dst_ip)


def _parse_neighbor_solicit(
    data: bytes, offset: int, hop_limit: int, src_mac: str, src_ip: str
) -> NeighborSolicitation:
    """A neighbour solicitation from an address (duplicate address detection, from ``::``, is not answered)."""
    if len(data) < offset + NDP_BODY.size:
        raise FrameError("short_icmpv6")
    icmp_type, code, _checksum, _reserved, target = NDP_BODY.unpack_from(data, offset)
    if icmp_type != ICMPV6_NEIGHBOR_SOLICIT or code != 0 or hop_limit != NDP_HOP_LIMIT:
        raise FrameError("not_neighbor_solicit")
    if src_ip == "::":
        raise FrameError("ndp_unspecified_source")
    return NeighborSolicitation(src_mac, src_ip, str(ipaddress.IPv6Address(target)))


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
