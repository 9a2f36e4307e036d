"""The frame module builds what it parses, byte for byte as os-ken's packet library builds the same frames."""

from __future__ import annotations

from typing import Any

import pytest

from nlb_sdn.core import frames
from nlb_sdn.core.frames import ArpRequest, TcpSegment, parse_frame
from nlb_sdn.framework import arp, ethernet, ipv4, packet, tcp

CLIENT_MAC, VIP_MAC = "00:00:00:00:00:01", "02:4e:0a:00:00:64"
LINUX_OPTIONS = [
    tcp.TCPOptionMaximumSegmentSize(max_seg_size=1460),
    tcp.TCPOptionSACKPermitted(),
    tcp.TCPOptionTimestamps(ts_val=7, ts_ecr=0),
    tcp.TCPOptionNoOperation(),
    tcp.TCPOptionWindowScale(shift_cnt=7),
]


def library_frame(*protocols: Any) -> bytes:
    """The frame os-ken's packet library serializes from these protocol headers (and payload)."""
    pkt = packet.Packet()
    for protocol in protocols:
        pkt.add_protocol(protocol)
    pkt.serialize()
    return bytes(pkt.data)


def library_tcp(
    flags: int,
    *,
    seq: int = 0,
    ack: int = 0,
    window: int = frames.DEFAULT_WINDOW,
    ttl: int = 64,
    options: list[Any] | None = None,
    payload: bytes = b"",
    dont_fragment: bool = False,
) -> bytes:
    """A client-to-VIP TCP frame as the packet library builds it."""
    protocols: list[Any] = [
        ethernet.ethernet(dst=VIP_MAC, src=CLIENT_MAC, ethertype=frames.ETH_TYPE_IP),
        ipv4.ipv4(src="10.0.0.1", dst="10.0.0.100", proto=frames.IPPROTO_TCP, ttl=ttl, flags=2 if dont_fragment else 0),
        tcp.tcp(src_port=40000, dst_port=80, seq=seq, ack=ack, bits=flags, window_size=window, option=options),
    ]
    return library_frame(*protocols, *([payload] if payload else []))


def our_tcp(flags: int, **kwargs: Any) -> bytes:
    """The same frame from :func:`nlb_sdn.core.frames.tcp_frame`."""
    return frames.tcp_frame(CLIENT_MAC, VIP_MAC, "10.0.0.1", "10.0.0.100", 40000, 80, flags, **kwargs)


MSS = [tcp.TCPOptionMaximumSegmentSize(max_seg_size=1460)]
TCP_CASES = {
    "probe syn": (dict(seq=0xFE00, window=1024), dict(seq=0xFE00, window=1024, options=MSS), frames.TCP_SYN),
    "probe rst": (dict(seq=0xFE01, window=1024), dict(seq=0xFE01, window=1024), frames.TCP_RST),
    "test ack with payload": (dict(seq=1, payload=b"x" * 101), dict(seq=1, payload=b"x" * 101), frames.TCP_ACK),
    "linux syn": (
        dict(seq=7, window=64240, options=b"".join(option.serialize() for option in LINUX_OPTIONS), dont_fragment=True),
        dict(seq=7, window=64240, options=LINUX_OPTIONS, dont_fragment=True),
        frames.TCP_SYN,
    ),
    "options padded to 32 bits": (dict(options=b"\x01"), dict(options=[tcp.TCPOptionNoOperation()]), frames.TCP_ACK),
    "syn-ack": (dict(seq=1, ack=1, window=65160), dict(seq=1, ack=1, window=65160), frames.TCP_SYN | frames.TCP_ACK),
}


@pytest.mark.parametrize("ours,library,flags", TCP_CASES.values(), ids=list(TCP_CASES))
def test_tcp_frames_are_the_packet_library_frames(ours: dict[str, Any], library: dict[str, Any], flags: int) -> None:
    assert our_tcp(flags, **ours) == library_tcp(flags, **library)


def test_arp_frames_are_the_packet_library_frames() -> None:
    request = library_frame(
        ethernet.ethernet(dst=frames.BROADCAST_MAC, src=CLIENT_MAC, ethertype=frames.ETH_TYPE_ARP),
        arp.arp(
            opcode=arp.ARP_REQUEST, src_mac=CLIENT_MAC, src_ip="10.0.0.1", dst_mac=frames.ZERO_MAC, dst_ip="10.0.0.100"
        ),
    )
    reply = library_frame(
        ethernet.ethernet(dst=CLIENT_MAC, src=VIP_MAC, ethertype=frames.ETH_TYPE_ARP),
        arp.arp(opcode=arp.ARP_REPLY, src_mac=VIP_MAC, src_ip="10.0.0.100", dst_mac=CLIENT_MAC, dst_ip="10.0.0.1"),
    )
    assert frames.arp_request_frame(CLIENT_MAC, "10.0.0.1", "10.0.0.100") == request
    assert frames.arp_reply_frame(VIP_MAC, "10.0.0.100", CLIENT_MAC, "10.0.0.1") == reply


def test_what_is_built_parses_back() -> None:
    syn = our_tcp(frames.TCP_SYN, seq=0x01020304)
    assert parse_frame(syn, len(syn)) == TcpSegment(
        CLIENT_MAC, "10.0.0.1", "10.0.0.100", 40000, 80, frames.TCP_SYN, 0x01020304
    )
    request = frames.arp_request_frame(CLIENT_MAC, "10.0.0.1", "10.0.0.100")
    assert parse_frame(request, len(request)) == ArpRequest(CLIENT_MAC, "10.0.0.1", "10.0.0.100")


def test_internet_checksum() -> None:
    assert frames.internet_checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D  # RFC 1071, 3.
    assert frames.internet_checksum(b"\x01") == frames.checksum_fold(0x0100)
    assert frames.checksum_fold(0x1FFFE) == 0x0000
