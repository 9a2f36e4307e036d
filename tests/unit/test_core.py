"""Unit tests of the pure core: cookies, selection, frame parsing, fabric paths and the LoadBalancer."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, strategies as st

from nlb_sdn.config import parse_config
from nlb_sdn.core.fabric import forwarding_tables
from nlb_sdn.core.frames import FrameError, TcpSegment, arp_request_frame, parse_frame
from nlb_sdn.core.selection import SmoothWeightedRoundRobin
from nlb_sdn.flows.pipeline import Cookie, CookieKind, Table, make_cookie
from tests.frames import syn_frame, tcp_frame
from tests.lib.configs import FABRIC, weighted_web_config as config
from tests.lib.shell_double import ShellDouble


def test_cookie_round_trip():
    cookie = make_cookie(CookieKind.NAT, 7, 513, 0xDEADBEEF)
    assert Cookie.decode(cookie) == Cookie(CookieKind.NAT, 7, 513, 0xDEADBEEF)
    with pytest.raises(ValueError):
        make_cookie(CookieKind.NAT, 256)


def test_swrr_is_smooth_and_exact():
    swrr = SmoothWeightedRoundRobin({"a": 5, "b": 1, "c": 1})
    picks = [swrr.pick() for _ in range(7)]
    assert picks.count("a") == 5 and picks[:3] != ["a", "a", "a"]


@given(st.dictionaries(st.text(min_size=1, max_size=3), st.integers(0, 20), min_size=1, max_size=6))
def test_swrr_follows_weights_exactly_over_a_cycle(weights):
    swrr = SmoothWeightedRoundRobin(weights)
    total = sum(weights.values())
    picks = [swrr.pick() for _ in range(total or 1)]
    if total == 0:
        assert picks == [None]
        return
    for name, weight in weights.items():
        assert picks.count(name) == weight


def test_frames_parse_syn_and_reject_malformed():
    seg = parse_frame(syn_frame("10.0.0.1", 40000, "10.0.0.100", 80), 74)
    assert isinstance(seg, TcpSegment) and seg.is_pure_syn and seg.dst_port == 80
    good = syn_frame("10.0.0.1", 40000, "10.0.0.100", 80)
    cases = {
        "short_ethernet": good[:10],
        "not_ipv4": good[:12] + b"\x88\xcc" + good[14:],  # LLDP: neither IPv4 nor (now parsed) IPv6
        "short_ipv4": good[:20],
        "ip_fragment": good[:20] + struct.pack("!H", 0x2000) + good[22:],
        "not_tcp": good[:23] + b"\x2f" + good[24:],
    }
    for reason, frame in cases.items():
        with pytest.raises(FrameError) as err:
            parse_frame(frame, len(frame))
        assert err.value.reason == reason


def test_forwarding_tables_follow_shortest_paths():
    tables = forwarding_tables(parse_config({"fabric": FABRIC}).fabric)
    assert tables[1]["00:00:00:00:00:01"] == 1
    assert tables[1]["00:00:00:00:00:11"] == 10
    assert tables[3]["00:00:00:00:00:11"] == 2
    assert tables[2]["00:00:00:00:00:12"] == 2


def test_new_connection_plumbs_both_directions_then_releases_the_syn():
    lb = ShellDouble(config())
    frame = syn_frame("10.0.0.1", 40000, "10.0.0.100", 80)
    msgs = lb.handle_packet_in(1, 1, frame, len(frame), Table.CONNECTIONS, now=1.0)
    names = [type(m).__name__ for m in msgs]
    assert names == ["OFPFlowMod", "OFPFlowMod", "OFPPacketOut"]
    forward, reverse = msgs[0], msgs[1]
    assert forward.table_id == Table.CONNECTIONS and reverse.table_id == Table.REVERSE
    assert Cookie.decode(forward.cookie).kind == CookieKind.NAT
    assert forward.flags & 1 and forward.idle_timeout == 15
    assert lb.stats()["packet_in"]["new_connection"] == 1
    assert lb.stats()["connections"]["total"] == 1


def test_duplicate_syn_gets_the_same_member():
    lb = ShellDouble(config())
    frame = syn_frame("10.0.0.1", 40000, "10.0.0.100", 80)
    first = lb.handle_packet_in(1, 1, frame, len(frame), Table.CONNECTIONS, now=1.0)
    second = lb.handle_packet_in(1, 1, frame, len(frame), Table.CONNECTIONS, now=1.1)
    assert dict(first[0].match.items()) == dict(second[0].match.items())
    assert str(first[0].instructions) == str(second[0].instructions)
    assert lb.stats()["packet_in"] == {"total": 2, "new_connection": 1, "syn_retransmit": 1}


def test_weights_are_followed():
    lb = ShellDouble(config(weights=(1, 1, 2)))
    for port in range(40000, 40400):
        frame = syn_frame("10.0.0.1", port, "10.0.0.100", 80)
        lb.handle_packet_in(1, 1, frame, len(frame), Table.CONNECTIONS, now=1.0)
    assert lb.stats()["selections"]["web"] == {"h1": 100, "h2": 100, "h3": 200}


def test_cap_refuses_and_counts():
    lb = ShellDouble(config(max_connections=2))
    for port in range(3):
        frame = syn_frame("10.0.0.1", 40000 + port, "10.0.0.100", 80)
        lb.handle_packet_in(1, 1, frame, len(frame), Table.CONNECTIONS, now=1.0)
    assert lb.stats()["refused"] == {"cap": 1}
    assert lb.stats()["connections"]["total"] == 2


def test_non_syn_without_connection_is_an_orphan():
    lb = ShellDouble(config())
    frame = tcp_frame("10.0.0.1", 40000, "10.0.0.100", 80, flags=0x10)
    assert lb.handle_packet_in(1, 1, frame, len(frame), Table.CONNECTIONS, now=1.0) == []
    assert lb.stats()["dropped"] == {"orphan": 1}


def test_truncated_packet_is_plumbed_but_not_released():
    lb = ShellDouble(config())
    frame = syn_frame("10.0.0.1", 40000, "10.0.0.100", 80)
    msgs = lb.handle_packet_in(1, 1, frame, len(frame) + 100, Table.CONNECTIONS, now=1.0)
    assert [type(m).__name__ for m in msgs] == ["OFPFlowMod", "OFPFlowMod"]


def test_flow_removed_keeps_table_exact_and_removes_the_other_direction():
    lb = ShellDouble(config())
    frame = syn_frame("10.0.0.1", 40000, "10.0.0.100", 80)
    msgs = lb.handle_packet_in(1, 1, frame, len(frame), Table.CONNECTIONS, now=1.0)
    forward = msgs[0]
    deletes = lb.handle_flow_removed(1, Table.CONNECTIONS, forward.cookie, dict(forward.match.items()))
    assert lb.stats()["connections"]["total"] == 0
    assert lb.stats()["connections"]["per_member"] == {}
    assert {m.table_id for m in deletes} == {Table.CONNECTIONS, Table.REVERSE}
    assert lb.handle_flow_removed(1, Table.REVERSE, msgs[1].cookie, dict(msgs[1].match.items())) == []


def test_removed_member_gets_no_new_connections_but_keeps_existing():
    lb = ShellDouble(config(weights=(1, 1, 1)))
    for port in range(3):
        frame = syn_frame("10.0.0.1", 40000 + port, "10.0.0.100", 80)
        lb.handle_packet_in(1, 1, frame, len(frame), Table.CONNECTIONS, now=1.0)
    data = lb.config.model_dump()
    data["vips"][0]["members"] = [m for m in data["vips"][0]["members"] if m["name"] != "h1"]
    changes = lb.apply_config(parse_config(data), dpids=[1])
    assert changes == {1: []}
    assert len(lb.connections(member="h1")) == 1
    for port in range(100, 130):
        frame = syn_frame("10.0.0.1", 40000 + port, "10.0.0.100", 80)
        lb.handle_packet_in(1, 1, frame, len(frame), Table.CONNECTIONS, now=1.0)
    assert lb.stats()["selections"]["web"]["h1"] == 1


def test_vip_delete_and_add_produce_flow_diff():
    lb = ShellDouble(config())
    data = lb.config.model_dump()
    vip = dict(data["vips"][0], name="web2", port=8080)
    data["vips"] = [vip]
    changes = lb.apply_config(parse_config(data), dpids=[1, 2])
    flow_mods = [m for m in changes[1] if type(m).__name__ == "OFPFlowMod"]  # the meter-mods have no table
    commands = [(m.command, m.table_id) for m in flow_mods]
    assert (3, 0) in commands or (4, 0) in commands  # deletes of the old VIP's table 0 entries
    assert any(m.command == 0 and m.table_id == 0 for m in flow_mods)  # the new VIP's entry
    assert set(changes) == {1, 2}


def test_arp_for_vip_and_hosts_is_answered():
    lb = ShellDouble(config())
    frame = arp_request_frame("00:00:00:00:00:01", "10.0.0.1", "10.0.0.100")
    msgs = lb.handle_packet_in(1, 1, frame, len(frame), Table.CLASSIFY, now=1.0)
    assert len(msgs) == 1 and type(msgs[0]).__name__ == "OFPPacketOut"
    assert lb.config.vips[0].mac.replace(":", "") in msgs[0].data.hex()
    frame = arp_request_frame("00:00:00:00:00:01", "10.0.0.1", "10.0.0.99")
    assert lb.handle_packet_in(1, 1, frame, len(frame), Table.CLASSIFY, now=1.0) == []
    assert lb.stats()["dropped"] == {"arp_unknown_target": 1}
