"""ICMP messages for tests: echo requests and errors quoting a TCP segment, as bytes, with valid checksums."""

from __future__ import annotations

import struct

from nlb_sdn.core.frames import ETH_HEADER, internet_checksum, tcp_frame

ECHO_REQUEST, DESTINATION_UNREACHABLE = 8, 3
FRAGMENTATION_NEEDED, PORT_UNREACHABLE = 4, 3
QUOTED_TCP_BYTES = 8
"""RFC 792's minimum: the quoted IP header and the first 8 bytes of its payload (ports and sequence number)."""


def icmp_message(icmp_type: int, code: int, rest: bytes, body: bytes) -> bytes:
    """An ICMP message: type, code, checksum, the 4 bytes ``rest`` of its header, then ``body``."""
    message = bytearray(struct.pack("!BBH", icmp_type, code, 0) + rest + body)
    struct.pack_into("!H", message, 2, internet_checksum(bytes(message)))
    return bytes(message)


def echo_request(ident: int = 7, seq: int = 1, data: bytes = b"ping" * 14) -> bytes:
    """An echo request message (56 bytes of data, as ping sends)."""
    return icmp_message(ECHO_REQUEST, 0, struct.pack("!HH", ident, seq), data)


def quoted_tcp(src_ip: str, dst_ip: str, sport: int, dport: int, payload: bytes = b"", whole: bool = False) -> bytes:
    """The IPv4 packet of a TCP segment as an ICMP error quotes it: its header and 8 bytes, or all of it."""
    packet = tcp_frame("00:00:00:00:00:01", "00:00:00:00:00:02", src_ip, dst_ip, sport, dport, 0x18, payload=payload)
    packet = packet[ETH_HEADER.size :][: 20 + 20 + len(payload)]
    return packet if whole else packet[: 20 + QUOTED_TCP_BYTES]


def frag_needed(quoted: bytes, mtu: int = 1400) -> bytes:
    """Destination unreachable, fragmentation needed (next-hop MTU ``mtu``), quoting ``quoted``."""
    return icmp_message(DESTINATION_UNREACHABLE, FRAGMENTATION_NEEDED, struct.pack("!HH", 0, mtu), quoted)


def port_unreachable(quoted: bytes) -> bytes:
    """Destination unreachable, port unreachable, quoting ``quoted``."""
    return icmp_message(DESTINATION_UNREACHABLE, PORT_UNREACHABLE, bytes(4), quoted)


def tcp_checksum_ok(packet: bytes) -> bool:
    """Whether a whole IPv4/TCP packet's TCP checksum holds."""
    ihl = (packet[0] & 0x0F) * 4
    segment = packet[ihl:]
    pseudo = packet[12:20] + struct.pack("!BBH", 0, 6, len(segment))
    return internet_checksum(pseudo + segment) == 0


def ipv4_frame(src_mac: str, dst_mac: str, src_ip: str, dst_ip: str, proto: int, payload: bytes) -> bytes:
    """An Ethernet/IPv4 frame (TTL 64, DF, header checksum set) carrying ``payload`` of protocol ``proto``."""
    header = bytearray(
        struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0x4000, 64, proto, 0, _aton(src_ip), _aton(dst_ip))
    )
    struct.pack_into("!H", header, 10, internet_checksum(bytes(header)))
    return _mac(dst_mac) + _mac(src_mac) + b"\x08\x00" + bytes(header) + payload


def _aton(address: str) -> bytes:
    """An IPv4 address's 4 bytes."""
    return bytes(int(part) for part in address.split("."))


def _mac(mac: str) -> bytes:
    """A MAC's 6 bytes."""
    return bytes.fromhex(mac.replace(":", ""))
