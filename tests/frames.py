"""Test frame builders (os-ken's packet library): SYNs, TCP segments and ARP requests."""

from __future__ import annotations

from nlb_sdn.framework import arp, ethernet, ipv4, packet, tcp


def tcp_frame(src_ip: str, src_port: int, dst_ip: str, dst_port: int, flags: int = 0x02,
              src_mac: str = "00:00:00:00:00:01", dst_mac: str = "02:4e:0a:00:00:64", payload: bytes = b"") -> bytes:
    """An Ethernet/IPv4/TCP frame."""
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(dst=dst_mac, src=src_mac, ethertype=0x0800))
    pkt.add_protocol(ipv4.ipv4(src=src_ip, dst=dst_ip, proto=6))
    pkt.add_protocol(tcp.tcp(src_port=src_port, dst_port=dst_port, seq=1, bits=flags, window_size=65535,
                             option=[tcp.TCPOptionMaximumSegmentSize(max_seg_size=1460)] if flags == 0x02 else None))
    if payload:
        pkt.add_protocol(payload)
    pkt.serialize()
    return bytes(pkt.data)


def syn_frame(src_ip: str, src_port: int, dst_ip: str, dst_port: int, **kwargs) -> bytes:
    """The SYN that opens a connection."""
    return tcp_frame(src_ip, src_port, dst_ip, dst_port, flags=0x02, **kwargs)


def arp_request_frame(src_mac: str, src_ip: str, target_ip: str) -> bytes:
    """A broadcast ARP request."""
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(dst="ff:ff:ff:ff:ff:ff", src=src_mac, ethertype=0x0806))
    pkt.add_protocol(arp.arp(opcode=arp.ARP_REQUEST, src_mac=src_mac, src_ip=src_ip,
                             dst_mac="00:00:00:00:00:00", dst_ip=target_ip))
    pkt.serialize()
    return bytes(pkt.data)
