"""Frames as the tests send them: ``nlb_sdn.core.frames`` from a client MAC to the VIP's MAC, sequence number 1."""

from __future__ import annotations

from typing import Any

from nlb_sdn.core import frames
from nlb_sdn.core.frames import (
    TCP_SYN,
    arp_request_frame as arp_request_frame,  # for tests/fakeof/test_switch.py
)

CLIENT_MAC = "00:00:00:00:00:01"
VIP_MAC = "02:4e:0a:00:00:64"


def tcp_frame(
    src_ip: str,
    src_port: int,
    dst_ip: str,
    dst_port: int,
    flags: int = TCP_SYN,
    src_mac: str = CLIENT_MAC,
    dst_mac: str = VIP_MAC,
    payload: bytes = b"",
) -> bytes:
    """An Ethernet/IPv4/TCP frame (a SYN carries the MSS option)."""
    return frames.tcp_frame(src_mac, dst_mac, src_ip, dst_ip, src_port, dst_port, flags, seq=1, payload=payload)


def syn_frame(src_ip: str, src_port: int, dst_ip: str, dst_port: int, **kwargs: Any) -> bytes:
    """The SYN that opens a connection."""
    return tcp_frame(src_ip, src_port, dst_ip, dst_port, flags=TCP_SYN, **kwargs)
