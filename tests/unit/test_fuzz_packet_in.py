"""Fuzz the packet-in path with 2,000 random and malformed frames: nothing crashes, each one is counted as dropped."""

from __future__ import annotations

import random
import struct

from nlb_sdn.flows.pipeline import Table
from tests.frames import syn_frame
from tests.lib.configs import weighted_web_config as config
from tests.lib.shell_double import ShellDouble

FRAMES = 2000


def with_ip_options(frame: bytes) -> bytes:
    """The same segment with 4 bytes of IP options (NOPs) and lengths fixed up, sent to a non-VIP port."""
    ihl_byte = 0x46
    ip_len = struct.unpack_from("!H", frame, 16)[0] + 4
    header = frame[:14] + bytes([ihl_byte]) + frame[15:16] + struct.pack("!H", ip_len) + frame[18:34]
    tcp = bytearray(frame[34:])
    tcp[2:4] = struct.pack("!H", 9999)
    return header + b"\x01\x01\x01\x00" + bytes(tcp)


def malformed(rng: random.Random, base: bytes) -> tuple[bytes, int]:
    """One malformed frame and the total_len the switch would report for it."""
    kind = rng.randrange(7)
    frame = bytearray(base)
    if kind == 0:
        cut = rng.randrange(0, 54)
        return bytes(frame[:cut]), cut
    if kind == 1:
        frame[12:14] = rng.choice([b"\x86\xdd", b"\x88\xcc", b"\x81\x00", struct.pack("!H", rng.randrange(1 << 16))])
        return bytes(frame), len(frame)
    if kind == 2:
        frame[20:22] = struct.pack("!H", rng.choice([0x2000, 0x0001, 0x20FF, 0x1FFF]))
        return bytes(frame), len(frame)
    if kind == 3:
        return with_ip_options(bytes(frame)), len(frame) + 4
    if kind == 4:
        frame[16:18] = struct.pack("!H", rng.choice([0, 10, 19, 39, 4000, 65535]))
        return bytes(frame), len(frame)
    if kind == 5:
        frame[14] = rng.choice([0x40, 0x41, 0x44, 0x60, 0x4F, 0x00, 0xFF])
        return bytes(frame), len(frame)
    noise = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 200)))
    if len(noise) >= 14:
        noise = noise[:12] + b"\x08\x00" + noise[14:]
        if len(noise) > 23:
            noise = noise[:23] + b"\x11" + noise[24:]
    return noise, len(noise)


def test_two_thousand_malformed_frames_are_all_counted_as_dropped():
    lb = ShellDouble(config())
    rng = random.Random(20261126)
    base = syn_frame("10.0.0.1", 40000, "10.0.0.100", 80)
    for _ in range(FRAMES):
        data, total_len = malformed(rng, base)
        assert lb.handle_packet_in(1, 1, data, total_len, Table.CONNECTIONS, now=1.0) == []
    stats = lb.stats()
    assert stats["packet_in"] == {"total": FRAMES}
    assert sum(stats["dropped"].values()) == FRAMES
    assert stats["connections"]["total"] == 0
    assert {
        "short_ethernet",
        "not_ipv4",
        "ip_fragment",
        "bad_ipv4_length",
        "bad_ipv4_header",
        "not_vip_service",
    } <= set(stats["dropped"])
