"""UDP VIP services outside the switch: the schema, frames, the flow field table and the agent's UDP check."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

import pytest

from nlb_sdn.agent.checks import probe_udp, run_check
from nlb_sdn.agent.config import UdpCheck, parse_agent_config
from nlb_sdn.config import ConfigError, parse_config
from nlb_sdn.core.frames import IPPROTO_UDP, FrameError, parse_frame, udp_frame
from nlb_sdn.flows import builders
from nlb_sdn.flows.l4 import L4Protocol, match_ports
from nlb_sdn.flows.pipeline import Priority, check_message

MAC_A, MAC_B = "00:00:00:00:00:01", "00:00:00:00:00:02"


def vip(**fields: Any) -> dict[str, Any]:
    """A UDP VIP service with one static member."""
    return {
        "name": "dns",
        "address": "10.0.0.100",
        "port": 53,
        "protocol": "udp",
        "members": [{"name": "h1", "address": "10.0.0.11", "port": 5353, "mac": MAC_A}],
        **fields,
    }


def test_a_udp_vip_service_is_accepted_and_dumped_as_udp() -> None:
    config = parse_config({"vips": [vip()]})
    assert config.vips[0].protocol == "udp"
    assert parse_config({"vips": [vip(dispatch="switch")]}).vips[0].switch_pinning == "conntrack"


@pytest.mark.parametrize(
    "fields, reason",
    [
        ({"mode": "l7", "routers": ["r1"]}, "protocol udp cannot use mode l7"),
        ({"protocol": "sctp"}, "Input should be 'tcp' or 'udp'"),
    ],
)
def test_what_a_udp_vip_cannot_do_is_refused_with_a_reason(fields: dict[str, Any], reason: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"vips": [vip(**fields)]})
    assert reason in str(err.value)


def test_probe_health_is_refused_for_udp() -> None:
    member = {"name": "h1", "address": "10.0.0.11", "port": 5353, "mac": MAC_A, "health": "probe"}
    with pytest.raises(ConfigError) as err:
        parse_config({"vips": [vip(members=[member])]})
    assert "protocol udp cannot use health probe" in str(err.value)


def test_a_tcp_and_a_udp_service_cannot_share_an_address_and_port() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"vips": [vip(), vip(name="dns-tcp", protocol="tcp")]})
    assert "tcp and udp cannot share one" in str(err.value)


def test_udp_frames_parse_and_bad_ones_are_named() -> None:
    frame = udp_frame(MAC_A, MAC_B, "10.0.0.1", "10.0.0.100", 40000, 53, b"query")
    segment = parse_frame(frame, len(frame))
    assert (segment.src_port, segment.dst_port, segment.proto, segment.flags) == (40000, 53, IPPROTO_UDP, 0)
    assert not segment.is_pure_syn
    for reason, bad in {
        "bad_udp_port": udp_frame(MAC_A, MAC_B, "10.0.0.1", "10.0.0.100", 0, 53),
        "bad_udp_length": frame[:38] + b"\x00\x04" + frame[40:],
    }.items():
        with pytest.raises(FrameError) as err:
            parse_frame(bad, len(bad))
        assert err.value.reason == reason


def test_the_protocol_table_names_each_protocols_fields() -> None:
    assert (L4Protocol.UDP.ip_proto, L4Protocol.UDP.src, L4Protocol.UDP.nxm_dst) == (17, "udp_src", "udp_dst_nxm")
    assert match_ports({"udp_src": 1, "udp_dst": 2}) == (1, 2)
    with pytest.raises(KeyError):
        match_ports({"ipv4_src": "10.0.0.1"})


def test_udp_builders_match_udp_and_keep_to_the_pipeline() -> None:
    route = builders.NatRoute(
        "10.0.0.1", 40000, "10.0.0.100", 53, MAC_B, "10.0.0.11", 5353, MAC_A, 1 << 57, 15, 0, L4Protocol.UDP
    )
    msgs = [
        *builders.vip_flows(1, 3, "10.0.0.100", 53, L4Protocol.UDP),
        builders.vip_syn_flow(1, 3, "10.0.0.100", 53, L4Protocol.UDP),
        *builders.nat_connection_flows(route),
        *builders.session_flows("10.0.0.0/24", route),
    ]
    assert all(check_message(msg) == [] for msg in msgs)
    forward, reverse = builders.nat_connection_flows(route)
    assert dict(forward.match.items())["udp_src"] == 40000 and dict(reverse.match.items())["udp_dst"] == 40000
    assert msgs[3].priority == Priority.VIP_DATAGRAM and "tcp_flags" not in dict(msgs[3].match.items())


def test_an_agent_udp_app_needs_a_check_that_speaks_udp() -> None:
    app = {"vip": "10.0.0.100", "vport": 53, "proto": "udp", "pip": "10.0.0.11", "pport": 5353, "capacity": 10}
    data = {"host_id": "h1", "key_file": "/etc/nlb-sdn/key", "controllers": ["10.0.0.254"], "apps": [app]}
    with pytest.raises(ConfigError) as err:
        parse_agent_config(data, "agent.yaml")
    assert "proto udp needs health type udp or command" in err.value.reason
    app["health"] = {"type": "udp", "send": "ping", "expect": "pong", "timeout": 0.5}
    config = parse_agent_config(data, "agent.yaml")
    assert isinstance(config.apps[0].health, UdpCheck) and config.apps[0].app_id.startswith("10.0.0.100:53/udp/")


def test_the_udp_check_wants_a_reply_within_its_timeout() -> None:
    responder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    responder.bind(("127.0.0.1", 0))
    port = responder.getsockname()[1]
    responder.settimeout(2.0)

    def answer_once() -> None:
        data, address = responder.recvfrom(512)
        responder.sendto(b"pong " + data, address)

    thread = threading.Thread(target=answer_once, daemon=True)
    thread.start()
    try:
        check = UdpCheck(type="udp", send="ping", expect="pong", timeout=1.0)
        assert asyncio.run(run_check(check, "127.0.0.1", port))
        thread.join(2.0)
        started = time.monotonic()
        assert not asyncio.run(probe_udp("127.0.0.1", port, b"ping", b"pong", 0.3)), "nobody answers any more"
        assert time.monotonic() - started < 1.0
    finally:
        responder.close()
    assert not asyncio.run(probe_udp("127.0.0.1", port, b"ping", b"", 0.5)), "port unreachable fails at once"
