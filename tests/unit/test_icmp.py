"""ICMP for VIPs without a switch: parsing punted ICMP, echo replies and rewritten errors with every checksum right,
the punt entries a config asks for, and the ``vips[].icmp`` schema."""

from __future__ import annotations

import struct
from typing import Any

import pytest

from nlb_sdn.config import ConfigError, parse_config, vip_mac
from nlb_sdn.core.frames import ETH_HEADER, FrameError, internet_checksum
from nlb_sdn.core.icmp import Rewrite, echo_reply, parse_icmp, rewrite_error, wanted_entries
from nlb_sdn.flows.icmp import ERROR_TYPES, IcmpEntry, IcmpPunt, IcmpType
from tests.lib.icmp import echo_request, frag_needed, ipv4_frame, quoted_tcp, tcp_checksum_ok

VIP, VIP_MAC = "10.0.0.100", vip_mac("10.0.0.100")
CLIENT, CLIENT_MAC = "10.1.0.1", "00:00:00:00:01:01"
ROUTER, ROUTER_MAC = "10.0.0.254", "00:00:00:00:00:fe"
MEMBER, MEMBER_MAC = "10.0.0.11", "00:00:00:00:00:11"


OFF = {"answer_ping": False, "relay_errors": False}


def config(icmp: dict[str, Any] | None = None, mode: str = "nat") -> Any:
    """The VIP with ``icmp`` settings over both switched off, or with the defaults when None."""
    vip: dict[str, Any] = {
        "name": "web",
        "address": VIP,
        "port": 80,
        "mode": mode,
        "members": [{"name": "h1", "address": MEMBER, "port": 80 if mode != "nat" else 8080}],
    }
    if icmp is not None:
        vip["icmp"] = {**OFF, **icmp}
    fabric = {
        "switches": [{"name": "s1", "dpid": 1}],
        "hosts": [{"name": "h1", "ip": MEMBER, "mac": MEMBER_MAC, "switch": "s1", "port": 1}],
    }
    return parse_config({"vips": [vip], "fabric": fabric})


def checksums_hold(frame: bytes) -> bool:
    ihl = (frame[ETH_HEADER.size] & 0x0F) * 4
    ip_header, message = frame[ETH_HEADER.size :][:ihl], frame[ETH_HEADER.size + ihl :]
    return internet_checksum(ip_header) == 0 and internet_checksum(message) == 0


def test_echo_reply_swaps_addresses_keeps_id_sequence_and_data() -> None:
    request = ipv4_frame(CLIENT_MAC, VIP_MAC, CLIENT, VIP, 1, echo_request(ident=9, seq=3))
    reply = echo_reply(parse_icmp(request), VIP_MAC)
    assert reply[:12] == bytes.fromhex("000000000101") + bytes.fromhex(VIP_MAC.replace(":", ""))
    frame = parse_icmp(reply)
    assert (frame.src_ip, frame.dst_ip, frame.icmp_type) == (VIP, CLIENT, IcmpType.ECHO_REPLY)
    assert reply[ETH_HEADER.size + 24 :] == request[ETH_HEADER.size + 24 :]  # id, sequence and data
    assert checksums_hold(reply)


@pytest.mark.parametrize("whole", [False, True], ids=["8 bytes quoted", "whole segment quoted"])
def test_error_to_the_vip_is_rewritten_for_the_member_with_every_checksum(whole: bool) -> None:
    quoted = quoted_tcp(VIP, CLIENT, 80, 40000, payload=b"x" * 100, whole=whole)
    error = ipv4_frame(ROUTER_MAC, VIP_MAC, ROUTER, VIP, 1, frag_needed(quoted))
    frame = parse_icmp(error)
    assert frame.quoted is not None
    assert (frame.quoted.src_ip, frame.quoted.src_port, frame.quoted.dst_ip, frame.quoted.dst_port) == (
        VIP,
        80,
        CLIENT,
        40000,
    )
    out = rewrite_error(frame, Rewrite(eth_dst=MEMBER_MAC, outer_dst=MEMBER, quoted_src=(MEMBER, 8080)))
    again = parse_icmp(out)
    assert (again.src_ip, again.dst_ip, out[:6]) == (ROUTER, MEMBER, bytes.fromhex("000000000011"))
    assert again.quoted is not None
    assert (again.quoted.src_ip, again.quoted.src_port, again.quoted.dst_port) == (MEMBER, 8080, 40000)
    assert struct.unpack_from("!H", out, ETH_HEADER.size + 20 + 6)[0] == 1400  # the next-hop MTU is kept
    assert checksums_hold(out)
    inner = out[ETH_HEADER.size + 28 :]
    assert internet_checksum(inner[:20]) == 0
    if whole:  # the quoted TCP checksum is updated for the new address and port, so it still holds
        assert tcp_checksum_ok(inner)


@pytest.mark.parametrize(
    "frame, reason",
    [
        (ipv4_frame(CLIENT_MAC, VIP_MAC, CLIENT, VIP, 1, echo_request())[:40], "icmp_truncated"),
        (ipv4_frame(CLIENT_MAC, VIP_MAC, CLIENT, VIP, 1, b"\x08\x00"), "short_icmp"),
        (ipv4_frame(ROUTER_MAC, VIP_MAC, ROUTER, VIP, 1, frag_needed(b"\x45" + bytes(10))), "short_icmp"),
        (
            ipv4_frame(ROUTER_MAC, VIP_MAC, ROUTER, VIP, 1, frag_needed(quoted_tcp(VIP, CLIENT, 80, 1)[:22])),
            "short_icmp_quote",
        ),
    ],
    ids=["truncated", "short message", "short quoted header", "quoted ports cut"],
)
def test_bad_icmp_is_dropped_with_a_reason(frame: bytes, reason: str) -> None:
    with pytest.raises(FrameError) as err:
        parse_icmp(frame)
    assert err.value.reason == reason


def test_ping_and_error_relay_are_on_by_default_and_can_be_switched_off() -> None:
    assert wanted_entries(config(), dpid=1) == wanted_entries(
        config({"answer_ping": True, "relay_errors": True}), dpid=1
    )
    assert IcmpEntry(IcmpPunt.ECHO_TO_VIP, VIP, IcmpType.ECHO_REQUEST) in wanted_entries(config())
    assert wanted_entries(config({})) == frozenset()


def test_entries_follow_the_settings_and_the_mode() -> None:
    assert wanted_entries(config({"answer_ping": True})) == {
        IcmpEntry(IcmpPunt.ECHO_TO_VIP, VIP, IcmpType.ECHO_REQUEST)
    }
    to_vip = {IcmpEntry(IcmpPunt.ERROR_TO_VIP, VIP, t) for t in ERROR_TYPES}
    assert wanted_entries(config({"relay_errors": True}), dpid=1) == to_vip | {
        IcmpEntry(IcmpPunt.ERROR_FROM_MEMBER, MEMBER, t) for t in ERROR_TYPES
    }
    # Errors from a member are punted on its edge switch only (s1, dpid 1).
    assert wanted_entries(config({"relay_errors": True}), dpid=2) == to_vip
    # A tunnel VIP's members answer from the VIP themselves: no NAT to undo, so no error entries.
    assert wanted_entries(config({"answer_ping": True, "relay_errors": True}, mode="tunnel")) == {
        IcmpEntry(IcmpPunt.ECHO_TO_VIP, VIP, IcmpType.ECHO_REQUEST)
    }


def test_icmp_settings_are_strict() -> None:
    with pytest.raises(ConfigError) as err:
        config({"answer_ping": True, "colour": "red"})
    assert err.value.key == "vips[web].icmp.colour"
    with pytest.raises(ConfigError) as err:
        config({"answer_ping": "sometimes"})
    assert err.value.key == "vips[web].icmp.answer_ping"


def test_an_error_quoting_a_later_fragment_has_no_quoted_ports() -> None:
    fragment = bytearray(quoted_tcp(CLIENT, MEMBER, 40000, 8080))
    fragment[6:8] = b"\x00\x10"  # fragment offset 128 bytes: what follows the header is not the TCP header
    error = ipv4_frame(MEMBER_MAC, CLIENT_MAC, MEMBER, CLIENT, 1, frag_needed(bytes(fragment)))
    assert parse_icmp(error).quoted is None
