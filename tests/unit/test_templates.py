"""Prepared messages (nlb_sdn/flows/templates.py): the same bytes and fields as the builders' messages serialised by
the framework, for the same inputs."""

from __future__ import annotations

import dataclasses

import pytest

from nlb_sdn.flows import builders, templates
from nlb_sdn.flows.pipeline import CookieKind, Table, make_cookie
from nlb_sdn.framework import ofproto_v1_3 as ofp, ofproto_v1_3_parser as parser

ROUTES = [
    builders.NatRoute(
        "10.1.2.3",
        40000,
        "10.0.0.100",
        80,
        "02:4e:0a:00:00:64",
        "10.0.0.11",
        8080,
        "00:00:00:00:00:11",
        make_cookie(CookieKind.NAT, 1, 1, 0xDEADBEEF),
        15,
        0,
    ),
    builders.NatRoute(
        "192.168.255.254",
        65535,
        "172.16.0.1",
        443,
        "02:4e:ac:10:00:01",
        "10.9.8.7",
        1,
        "aa:bb:cc:dd:ee:ff",
        make_cookie(CookieKind.NAT, 255, 0xFFFF, 0xFFFFFFFF),
        0,
        3600,
    ),
    builders.NatRoute(
        "0.0.0.1",
        1,
        "10.0.0.100",
        80,
        "02:4e:0a:00:00:64",
        "10.0.0.12",
        80,
        "00:00:00:00:00:12",
        make_cookie(CookieKind.NAT, 0, 7, 1),
        65535,
        65535,
    ),
]


def wire(msgs: list, first_xid: int = 1) -> list[bytes]:
    """Each message as the framework serialises it with consecutive xids."""
    out = []
    for xid, msg in enumerate(msgs, start=first_xid):
        msg.datapath = templates._Protocol
        msg.xid = xid
        msg.serialize()
        out.append(bytes(msg.buf))
    return out


@pytest.mark.parametrize("route", ROUTES)
def test_connection_flow_mods_are_the_builders_bytes(route: builders.NatRoute) -> None:
    assert wire(templates.nat_connection_flows(route), 7) == wire(builders.nat_connection_flows(route), 7)


def test_one_template_serves_every_client_of_a_member_route() -> None:
    base = ROUTES[0]
    clients = [("10.1.2.3", 40000), ("10.200.0.9", 1024), ("255.255.255.255", 65535), ("0.0.0.0", 0)]
    for client_ip, client_port in clients:
        route = dataclasses.replace(base, client_ip=client_ip, client_port=client_port)
        assert wire(templates.nat_connection_flows(route)) == wire(builders.nat_connection_flows(route))
    member_route = [getattr(base, field.name) for field in dataclasses.fields(base)][2:]
    assert templates.nat_template(*member_route) is templates.nat_template(*member_route)


@pytest.mark.parametrize("route", ROUTES)
def test_prepared_flow_mods_decode_to_the_builders_fields(route: builders.NatRoute) -> None:
    for prepared, built in zip(
        templates.nat_connection_flows(route), builders.nat_connection_flows(route), strict=True
    ):
        assert type(prepared).__name__ == "OFPFlowMod" and isinstance(prepared, parser.OFPFlowMod)
        for field in templates.FLOW_MOD_FIELDS:
            if field in ("match", "instructions"):
                continue
            assert getattr(prepared, field) == getattr(built, field), field
        assert dict(prepared.match.items()) == dict(built.match.items())
        [raw] = wire([built], 0)
        parsed = parser.OFPFlowMod.parser(None, ofp.OFP_VERSION, ofp.OFPT_FLOW_MOD, len(raw), 0, raw)
        assert str(prepared.instructions) == str(parsed.instructions)
    forward, reverse = templates.nat_connection_flows(route)
    assert (forward.table_id, reverse.table_id) == (Table.CONNECTIONS, Table.REVERSE)
    assert forward.cookie == reverse.cookie == route.cookie and forward.flags & ofp.OFPFF_SEND_FLOW_REM


def test_packet_out_is_the_builders_bytes_and_fields() -> None:
    frame = bytes(range(74))
    prepared, built = templates.packet_out_table(3, frame), builders.packet_out_table(3, frame)
    assert wire([prepared], 42) == wire([built], 42)
    assert type(prepared).__name__ == "OFPPacketOut" and isinstance(prepared, parser.OFPPacketOut)
    assert (prepared.buffer_id, prepared.in_port, prepared.data) == (ofp.OFP_NO_BUFFER, 3, frame)
    [action] = prepared.actions
    assert isinstance(action, parser.OFPActionOutput) and action.port == ofp.OFPP_TABLE


def test_packet_outs_parse_back() -> None:
    frame = b"\x01" * 60
    [raw] = wire([builders.packet_out_table(7, frame)], 9)
    msg = templates.parse_packet_out(raw)
    assert (msg.xid, msg.buffer_id, msg.in_port, msg.data, msg.actions_len) == (9, ofp.OFP_NO_BUFFER, 7, frame, 16)
    assert [a.port for a in msg.actions] == [ofp.OFPP_TABLE]


def test_serialise_packs_the_xid_and_keeps_the_template() -> None:
    forward, _reverse = templates.nat_connection_flows(ROUTES[0])
    forward.xid = 0xCAFEBABE
    forward.serialize()
    assert bytes(forward.buf[4:8]) == bytes.fromhex("cafebabe")
    assert bytes(forward.wire[4:8]) == b"\x00\x00\x00\x00"
    assert len(forward.buf) == forward.msg_len == len(forward.wire)


def test_text_form_shows_the_decoded_fields() -> None:
    forward, _reverse = templates.nat_connection_flows(ROUTES[0])
    text = str(forward)
    assert "10.1.2.3" in text and "OFPInstructionGotoTable" in text


def test_unknown_attributes_still_raise() -> None:
    forward, _reverse = templates.nat_connection_flows(ROUTES[0])
    with pytest.raises(AttributeError):
        forward.no_such_field  # noqa: B018 - the attribute access is the test
