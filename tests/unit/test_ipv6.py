"""IPv6 in the model and the leaves: config, client prefixes, route atom keys, frames, and REST over the core."""

from __future__ import annotations

import pytest

from nlb_sdn.affinity.sessions import client_ip_sid, client_of_match, client_prefix
from nlb_sdn.config import ConfigError, parse_config, vip_mac
from nlb_sdn.core import frames
from nlb_sdn.core.frames import FrameError, NeighborSolicitation, TcpSegment, parse_frame
from nlb_sdn.flows.family import AddressFamily, family_of, match_address
from nlb_sdn.rest import make_app
from tests.lib.rest import CoreBackend, call
from tests.lib.shell_double import ShellDouble

HOSTS = [
    {"name": "c1", "ip": "10.0.0.1", "ipv6": "fd00::1", "mac": "00:00:00:00:00:01", "switch": "s1", "port": 1},
    {"name": "h1", "ip": "10.0.0.11", "ipv6": "fd00::11", "mac": "00:00:00:00:00:11", "switch": "s1", "port": 2},
]


def config_with(vip: dict, hosts: list[dict] | None = None):
    """A config with one VIP over a one-switch dual-stack fabric."""
    fabric = {"switches": [{"name": "s1", "dpid": 1}], "hosts": HOSTS if hosts is None else hosts}
    return parse_config({"vips": [{"name": "web6", "port": 80, **vip}], "fabric": fabric})


def test_an_ipv6_vip_takes_ipv6_members_normalised_and_a_whole_address_prefix() -> None:
    config = config_with({"address": "FD00:0::100", "members": [{"address": "fd00::0011", "port": 8080}]})
    [vip] = config.vips
    assert (vip.address, vip.members[0].address, vip.members[0].name) == ("fd00::100", "fd00::11", "fd00::11:8080")
    assert vip.affinity_prefix == 128 and vip.mac == vip_mac("fd00::100") == "02:4f:00:00:01:00"
    assert config.fabric.host("fd00::11").name == "h1"
    four = config_with({"address": "10.0.0.100", "members": [{"address": "10.0.0.11", "port": 80}]})
    assert four.vips[0].affinity_prefix == 32


@pytest.mark.parametrize(
    ("vip", "reason"),
    [
        ({"address": "fd00::100", "members": [{"address": "10.0.0.11", "port": 80}]}, "not of the VIP's family"),
        ({"address": "10.0.0.100", "members": [{"address": "fd00::11", "port": 80}]}, "not of the VIP's family"),
        ({"address": "10.0.0.100", "affinity": "client_ip", "affinity_prefix": 64}, "longer than an address"),
        ({"address": "fd00::100", "affinity_prefix": 129}, "less than or equal to 128"),
        ({"address": "fe80::1"}, "link-local"),
        ({"address": "ff02::1"}, "multicast"),
        ({"address": "::1"}, "loopback"),
        ({"address": "fd00::zz"}, "not an IPv4 address nor an IPv6 address"),
        ({"address": "fd00::100", "mode": "tunnel"}, "IPv4 only"),
        ({"address": "fd00::100", "members": [{"address": "fd00::11", "port": 80, "health": "agent"}]}, "IPv4 only"),
        ({"address": "fd00::100", "protocol": "udp"}, "protocol udp is IPv4 only"),
        ({"address": "fd00::100", "icmp": {"answer_ping": True}}, "icmp answer_ping and relay_errors are IPv4 only"),
        ({"address": "fd00::11"}, "also a host address"),
        ({"address": "fd00::100", "members": [{"address": "fd00::99", "port": 80}]}, "not a host of the fabric"),
    ],
)
def test_ipv6_config_errors_name_the_reason(vip: dict, reason: str) -> None:
    with pytest.raises(ConfigError) as err:
        config_with(vip)
    assert reason in str(err.value)


def test_fabric_host_ipv6_addresses_are_unique() -> None:
    hosts = [dict(HOSTS[0]), dict(HOSTS[1], ipv6="fd00::1")]
    with pytest.raises(ConfigError, match="duplicate host ipv6"):
        config_with({"address": "fd00::100"}, hosts)


def test_client_prefixes_and_session_ids_of_ipv6_clients() -> None:
    assert client_prefix("fd00::1:2", 128) == "fd00::1:2"
    assert client_prefix("fd00::1:2", 112) == "fd00::1:0/112"
    assert client_prefix("10.0.0.5", 24) == "10.0.0.0/24"
    assert client_of_match(("fd00::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff00")) == "fd00::/120"
    assert client_of_match(("fd00::7", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")) == "fd00::7"
    assert client_ip_sid("web6", "fd00::1:2", 112) == "web6@fd00::1:0_112"


def test_address_families_name_their_fields() -> None:
    six = family_of("fd00::1")
    assert six is AddressFamily.IPV6 and family_of("10.0.0.1") is AddressFamily.IPV4
    assert (six.eth_type, six.src, six.nxm_dst, six.nat_range_min, six.bits) == (
        0x86DD,
        "ipv6_src",
        "ipv6_dst_nxm",
        "range_ipv6_min",
        128,
    )
    assert match_address({"ipv6_dst": "fd00::1"}, "dst") == "fd00::1"
    with pytest.raises(KeyError):
        match_address({"tcp_dst": 80}, "dst")


def test_frames_parse_ipv6_syns_and_neighbor_solicitations_and_reject_the_rest() -> None:
    syn = frames.tcp_frame("00:00:00:00:00:01", "02:4f:00:00:01:00", "fd00::1", "fd00::100", 40000, 80, frames.TCP_SYN)
    assert parse_frame(syn, len(syn)) == TcpSegment("00:00:00:00:00:01", "fd00::1", "fd00::100", 40000, 80, 2, 0, 0)
    ns = frames.neighbor_solicit_frame("00:00:00:00:00:01", "fd00::1", "fd00::100")
    assert parse_frame(ns, len(ns)) == NeighborSolicitation("00:00:00:00:00:01", "fd00::1", "fd00::100")
    cases = {
        "short_ipv6": syn[:30],
        "bad_ipv6_header": syn[:14] + b"\x40" + syn[15:],
        "not_tcp": syn[:20] + b"\x11" + syn[21:],
        "not_neighbor_solicit": ns[:21] + b"\x40" + ns[22:],  # hop limit 64
        "ndp_unspecified_source": ns[:22] + bytes(16) + ns[38:],
    }
    for reason, frame in cases.items():
        with pytest.raises(FrameError) as err:
            parse_frame(frame, len(frame))
        assert err.value.reason == reason
    with pytest.raises(FrameError) as err:
        parse_frame(syn, len(syn) - 30)
    assert err.value.reason == "bad_ipv6_length"


def test_rest_adds_an_ipv6_vip_and_its_members() -> None:
    backend = CoreBackend(ShellDouble(config_with({"address": "10.0.0.100"})))
    app = make_app(backend)
    body = {"name": "six", "address": "fd00::200", "port": 80, "members": [{"address": "fd00::11", "port": 80}]}
    assert call(app, "POST", "/v1/vips", body).status_int == 201
    added = call(app, "POST", "/v1/vips/six/members", {"name": "h1b", "address": "fd00::11", "port": 81})
    assert added.status_int == 201
    assert [m.address for m in backend.lb.config.vip("six").members] == ["fd00::11", "fd00::11"]
    wrong = call(app, "POST", "/v1/vips/six/members", {"name": "h1c", "address": "10.0.0.11", "port": 82})
    assert wrong.status_int == 400 and "not of the VIP's family" in wrong.json["detail"]
