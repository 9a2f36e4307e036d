"""Properties of the packet-in path: the frame parser and ``LoadBalancer.handle_packet_in`` on arbitrary input.

The parser either parses or raises :class:`FrameError`, and what it builds it parses back. The core takes any frame,
table id, cookie, switch and port without raising, answers with Effects and counts every frame once (a frame the
parser rejects as one drop under the parser's reason). ``tests/unit/test_fuzz_packet_in.py`` is the seeded version.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from hypothesis import given, strategies as st

from nlb_sdn.config import Config, parse_config
from nlb_sdn.core.balancer import LoadBalancer
from nlb_sdn.core.effects import Effects
from nlb_sdn.core.frames import (
    ArpRequest,
    FrameError,
    TcpSegment,
    arp_request_frame,
    parse_frame,
    tcp_frame,
)
from nlb_sdn.flows.pipeline import CookieKind, Table, make_cookie
from tests.lib.configs import FABRIC
from tests.lib.properties import PROPERTY

macs = st.binary(min_size=6, max_size=6).map(lambda raw: raw.hex(":"))
ipv4s = st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))
ports = st.integers(1, 65535)
tcp_options = st.binary(max_size=40).map(lambda raw: raw[: 40 - (-len(raw) % 4)])


def _member(index: int, port: int = 80, **fields: Any) -> dict[str, Any]:
    """Member ``h<index>`` (a FABRIC host) on ``port``."""
    return {"name": f"h{index}", "address": f"10.0.0.1{index}", "port": port, **fields}


def fuzz_config() -> Config:
    """VIPs of every kind the packet-in path serves: nat, switch dispatch, sessions, learn pinning and tunnel."""
    vips = [
        {"name": "web", "address": "10.0.0.100", "port": 80, "members": [_member(1), _member(2, weight=3)]},
        {"name": "sw", "address": "10.0.0.101", "port": 80, "dispatch": "switch", "members": [_member(1, 8080)]},
        {
            "name": "aff",
            "address": "10.0.0.102",
            "port": 80,
            "affinity": "client_ip",
            "granularity": "session",
            "members": [_member(1, 81), _member(3, 81)],
        },
        {
            "name": "swl",
            "address": "10.0.0.103",
            "port": 80,
            "dispatch": "switch",
            "affinity": "client_ip",
            "members": [_member(2, 82), _member(3, 82)],
        },
        {"name": "tun", "address": "10.0.0.104", "port": 80, "mode": "tunnel", "members": [_member(1), _member(2)]},
        {"name": "probed", "address": "10.0.0.105", "port": 80, "members": [_member(3, 83, health="probe")]},
    ]
    return parse_config({"vips": vips, "fabric": FABRIC})


CONFIG = fuzz_config()
VIP_ADDRESSES = sorted({vip.address for vip in CONFIG.vips})
HOST_ADDRESSES = [host.ip for host in CONFIG.fabric.hosts]
VIP_MACS = sorted({vip.mac for vip in CONFIG.vips})


segments_to_vips = st.builds(
    tcp_frame,
    macs,
    st.sampled_from(VIP_MACS) | macs,
    st.sampled_from(HOST_ADDRESSES) | ipv4s,
    st.sampled_from(VIP_ADDRESSES + HOST_ADDRESSES) | ipv4s,
    ports,
    st.sampled_from([80, 81, 82, 83, 8080, 0xFE00 + 3]) | ports,
    st.integers(0, 255),
    seq=st.integers(0, 2**32 - 1),
    payload=st.binary(max_size=32),
)
"""Well-formed TCP frames aimed near the VIPs: from a host or anywhere, to a VIP (or a host) on a likely port."""
changes = st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), max_size=4)


def mutated(base: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """Frames from ``base`` with a few bytes overwritten and maybe cut short."""
    return st.builds(_mutate, base, changes, st.floats(0, 1))


def _mutate(frame: bytes, overwrites: list[tuple[float, int]], keep: float) -> bytes:
    """``frame`` with the bytes at the given fractions of its length overwritten, then only ``keep`` of it kept."""
    data = bytearray(frame)
    for where, value in overwrites:
        data[int(where * len(data))] = value
    return bytes(data[: round(keep * len(data))])


arp_requests = st.builds(
    arp_request_frame, macs, st.sampled_from(HOST_ADDRESSES) | ipv4s, st.sampled_from(VIP_ADDRESSES) | ipv4s
)
any_frames = st.one_of(
    st.binary(max_size=200), segments_to_vips, mutated(segments_to_vips), arp_requests, mutated(arp_requests)
)
cookies = st.one_of(
    st.integers(0, 2**64 - 1),
    st.builds(
        make_cookie, st.sampled_from(CookieKind), st.integers(0, 255), st.integers(0, 0xFFFF), st.integers(0, 2**32 - 1)
    ),
)
table_ids = st.sampled_from(Table) | st.integers(0, 255)


@PROPERTY
@given(data=any_frames, total_len=st.integers(0, 70_000), near=st.integers(-64, 64), exact=st.booleans())
def test_parse_frame_raises_only_frame_error(data: bytes, total_len: int, near: int, exact: bool) -> None:
    try:
        parse_frame(data, max(0, len(data) + near) if exact else total_len)
    except FrameError as exc:
        assert exc.reason


@st.composite
def tcp_cases(draw: st.DrawFn) -> tuple[bytes, TcpSegment]:
    """A TCP frame built from generated fields, and the segment those fields make."""
    src_mac, dst_mac, src_ip, dst_ip = draw(macs), draw(macs), draw(ipv4s), draw(ipv4s)
    src_port, dst_port, flags, seq = (
        draw(ports),
        draw(ports),
        draw(st.integers(0, 255)),
        draw(st.integers(0, 2**32 - 1)),
    )
    frame = tcp_frame(
        src_mac,
        dst_mac,
        src_ip,
        dst_ip,
        src_port,
        dst_port,
        flags,
        seq=seq,
        options=draw(tcp_options),
        payload=draw(st.binary(max_size=64)),
    )
    return frame, TcpSegment(src_mac, src_ip, dst_ip, src_port, dst_port, flags, seq)


@st.composite
def arp_cases(draw: st.DrawFn) -> tuple[bytes, ArpRequest]:
    """An ARP request frame built from generated fields, and the request those fields make."""
    sender_mac, sender_ip, target_ip = draw(macs), draw(ipv4s), draw(ipv4s)
    return arp_request_frame(sender_mac, sender_ip, target_ip), ArpRequest(sender_mac, sender_ip, target_ip)


@PROPERTY
@given(case=tcp_cases() | arp_cases(), snap=st.integers(min_value=128, max_value=200))
def test_built_frames_parse_back(case: tuple[bytes, TcpSegment | ArpRequest], snap: int) -> None:
    frame, expected = case
    assert parse_frame(frame, len(frame)) == expected
    # A packet-in carries at most miss_send_len (128 and up) bytes of the frame, and its full length.
    assert parse_frame(frame[:snap], len(frame)) == expected


class _Core:
    """One LoadBalancer shared by the examples (building one takes milliseconds), renewed every RENEW packet-ins."""

    RENEW = 500

    def __init__(self) -> None:
        self.lb = LoadBalancer(CONFIG, b"fuzz-key-0123456789", 0.0)
        self.calls = 0

    def get(self) -> LoadBalancer:
        """The shared core, a fresh one every RENEW calls so that state from old examples does not pile up."""
        self.calls += 1
        if self.calls % self.RENEW == 0:
            self.lb = LoadBalancer(CONFIG, b"fuzz-key-0123456789", 0.0)
        return self.lb


CORE = _Core()
packet_ins = st.tuples(
    any_frames,
    st.integers(-64, 64),
    table_ids,
    cookies,
    st.sampled_from([1, 2, 3]) | st.integers(0, 2**64 - 1),
    st.integers(0, 2**32 - 1),
)


@PROPERTY
@given(events=st.lists(packet_ins, min_size=1, max_size=4), now=st.floats(0, 1e6, allow_nan=False))
def test_handle_packet_in_never_raises_and_counts_every_frame(events: list[tuple[Any, ...]], now: float) -> None:
    lb = CORE.get()
    for data, slack, table_id, cookie, dpid, in_port in events:
        total_len = max(0, len(data) + slack)
        before_total = lb.ctx.counters.packet_in["total"]
        before_dropped = sum(lb.ctx.counters.dropped.values())
        effects = lb.handle_packet_in(dpid, in_port, data, total_len, table_id, now, cookie)
        assert isinstance(effects, Effects)
        assert lb.ctx.counters.packet_in["total"] == before_total + 1
        try:
            parse_frame(data, total_len)
        except FrameError as exc:
            assert sum(lb.ctx.counters.dropped.values()) == before_dropped + 1
            assert lb.ctx.counters.dropped[exc.reason] >= 1
            assert not effects.messages and not effects.datagrams and not effects.dam
        now += 0.5
