"""Gateway uplinks (``fabric.gateways``): schema checks, longest-prefix choice, proxy ARP and table 3 routes."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from nlb_sdn.config import ConfigError, Fabric, parse_config
from nlb_sdn.core.fabric import FabricView, forwarding_tables
from nlb_sdn.flows import gateway
from nlb_sdn.flows.pipeline import Priority, check_messages
from nlb_sdn.rest.fabric import fabric_view
from nlb_sdn.rest.schema import FabricView as FabricViewAnswer
from tests.lib.configs import FABRIC
from topologies import lab_config
from topologies.gateway import GatewayTopo

UPLINK: dict[str, Any] = {
    "name": "up",
    "switch": "s1",
    "port": 5,
    "router_ip": "172.16.0.2",
    "router_mac": "00:00:00:00:FE:02",
    "prefixes": ["10.99.0.0/16", "0.0.0.0/0"],
    "address": "172.16.0.1",
    "mac": "02:00:00:00:fe:01",
}
BRANCH: dict[str, Any] = {
    "name": "branch",
    "switch": "s2",
    "port": 9,
    "router_ip": "172.16.1.2",
    "router_mac": "00:00:00:00:fe:12",
    "prefixes": ["10.99.7.0/24"],
    "address": "172.16.1.1",
    "mac": "02:00:00:00:fe:11",
}


def fabric_with(*gateways: dict[str, Any], vips: list[dict[str, Any]] | None = None) -> Fabric:
    """FABRIC (c1 on s1, h1..h3 on s2, both linked through s3) with ``gateways``, validated with ``vips``."""
    fabric = copy.deepcopy(FABRIC) | {"gateways": [copy.deepcopy(g) for g in gateways]}
    return parse_config({"fabric": fabric, "vips": vips or []}, "lab.yaml").fabric


def view_of(fabric: Fabric) -> FabricView:
    """A FabricView of ``fabric``."""
    view = FabricView()
    view.update(fabric)
    return view


def test_a_gateway_is_read_with_normalised_prefixes_and_lower_case_macs() -> None:
    [uplink] = fabric_with(UPLINK).gateways
    assert uplink.router_mac == "00:00:00:00:fe:02"
    assert uplink.prefixes == ["10.99.0.0/16", "0.0.0.0/0"]
    assert Fabric().gateways == [], "no gateways unless listed: existing configs are unchanged"


@pytest.mark.parametrize(
    ("change", "key", "reason"),
    [
        ({"switch": "s9"}, "fabric", "gateway 'up' names unknown switch 's9'"),
        ({"port": 1}, "fabric", "gateway 'up': port s1:1 is used twice"),
        ({"prefixes": ["10.99.0.0/33"]}, "fabric.gateways[up].prefixes", "prefix '10.99.0.0/33'"),
        ({"prefixes": ["10.99.0.1/16"]}, "fabric.gateways[up].prefixes", "has host bits set"),
        ({"prefixes": ["10.0.0.1/32"]}, "fabric", "prefix 10.0.0.1/32 is exactly host 'c1''s address"),
        ({"prefixes": []}, "fabric.gateways[up].prefixes", "at least 1 item"),
        ({"address": "10.0.0.11"}, "fabric", "10.0.0.11 is also host 'h1''s address"),
        ({"router_ip": "172.16.0.1"}, "fabric.gateways[up]", "is also the router's address"),
        ({"mac": "00:00:00:00:00:11"}, "fabric", "MAC 00:00:00:00:00:11 is also a host's"),
        ({"address": "127.0.0.1"}, "fabric.gateways[up].address", "not a unicast address"),
        ({"via": "x"}, "fabric.gateways[up].via", "unknown key"),
    ],
)
def test_a_bad_gateway_names_the_file_key_and_reason(change: dict[str, Any], key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as error:
        fabric_with(UPLINK | change)
    assert error.value.source == "lab.yaml"
    assert (error.value.key, reason in error.value.reason) == (key, True), error.value


def test_two_gateways_may_not_share_a_prefix_a_port_or_an_address() -> None:
    for clash, reason in (
        ({"prefixes": ["10.99.0.0/16"]}, "prefix 10.99.0.0/16 is also gateway 'up''s (ambiguous)"),
        ({"address": "172.16.0.1"}, "172.16.0.1 is also gateway 'up''s"),
        ({"switch": "s1", "port": 5}, "port s1:5 is used twice"),
        ({"name": "up"}, "duplicate gateway name 'up'"),
    ):
        with pytest.raises(ConfigError, match=re.escape(reason)):
            fabric_with(UPLINK, BRANCH | clash)


def test_a_vip_may_not_take_a_gateway_address_or_be_a_gateway_prefix() -> None:
    vip = {"name": "web", "address": "172.16.0.1", "port": 80}
    with pytest.raises(ConfigError, match=re.escape("vip 'web' address 172.16.0.1 is also a gateway address")):
        fabric_with(UPLINK, vips=[vip])
    with pytest.raises(ConfigError, match=re.escape("prefix 10.0.0.100/32 is exactly vip 'web'")):
        fabric_with(UPLINK | {"prefixes": ["10.0.0.100/32"]}, vips=[vip | {"address": "10.0.0.100"}])


def test_the_longest_prefix_picks_the_gateway_and_fabric_hosts_are_never_routed() -> None:
    view = view_of(fabric_with(UPLINK, BRANCH))
    assert view.gateway_for("10.99.7.20").name == "branch"
    assert view.gateway_for("10.99.8.20").name == "up"
    assert view.gateway_for("8.8.8.8").name == "up", "the default route"
    assert view.gateway_for("10.0.0.11") is None, "a fabric host is reached directly"
    assert view_of(fabric_with(BRANCH)).gateway_for("8.8.8.8") is None


def test_proxy_arp_answers_off_the_uplink_and_never_sends_a_router_to_itself() -> None:
    view = view_of(fabric_with(UPLINK, BRANCH))
    member_port, uplink = (2, 1), (1, 5)
    assert view.gateway_arp_mac("10.99.7.20", *member_port) == BRANCH["mac"]
    assert view.gateway_arp_mac("10.99.8.20", *member_port) == UPLINK["mac"]
    assert view.gateway_arp_mac("10.99.8.20", *uplink) is None
    assert view.gateway_arp_mac("10.99.7.20", *uplink) == BRANCH["mac"], "another gateway's prefix"
    assert view.gateway_arp_mac("172.16.0.1", *uplink) == UPLINK["mac"], "the router's next hop"
    assert view.gateway_arp_mac("172.16.0.2", *member_port) == "00:00:00:00:fe:02"
    assert view.gateway_arp_mac("172.16.0.2", *uplink) is None


def test_router_macs_have_paths_like_hosts() -> None:
    tables = forwarding_tables(fabric_with(UPLINK))
    assert tables[1]["00:00:00:00:fe:02"] == 5
    assert tables[2]["00:00:00:00:fe:02"] == 10 and tables[3]["00:00:00:00:fe:02"] == 1
    down = forwarding_tables(fabric_with(UPLINK), down_ports={(1, 5)})
    assert all("00:00:00:00:fe:02" not in table for table in down.values())


def test_routes_rank_by_prefix_length_and_a_hosts_own_address_ranks_first() -> None:
    fabric = fabric_with(UPLINK, BRANCH)
    ports = forwarding_tables(fabric)[3]
    routes = gateway.prefix_routes(fabric, "s3", ports)
    ranks = {(route.via_mac, route.prefix): route.rank for route in routes}
    assert ranks[(UPLINK["mac"], "10.99.7.0/24")] == 24 and ranks[(UPLINK["mac"], "0.0.0.0/0")] == 0
    assert ranks[(BRANCH["mac"], "10.0.0.11/32")] == gateway.HOST_ROUTE_LENGTH
    assert len(routes) == 2 * (3 + 4), "each fabric-side MAC: every gateway prefix and every host's own address"
    msgs = gateway.route_flows(1, routes)
    assert check_messages(msgs) == []
    assert {msg.priority for msg in msgs} == {Priority.PREFIX_ROUTE + rank for rank in (0, 16, 24, 33)}


def test_the_uplink_switch_writes_the_gateways_mac_as_source_on_its_way_out() -> None:
    fabric = fabric_with(UPLINK)
    edge = [r for r in gateway.prefix_routes(fabric, "s1", forwarding_tables(fabric)[1]) if r.via_mac != UPLINK["mac"]]
    assert edge == [gateway.PrefixRoute("00:00:00:00:fe:02", "0.0.0.0/0", 0, UPLINK["mac"], "00:00:00:00:fe:02", 5)]


def test_route_changes_delete_what_is_gone_and_add_what_moved() -> None:
    fabric = fabric_with(UPLINK)
    before = gateway.prefix_routes(fabric, "s3", forwarding_tables(fabric)[3])
    after = gateway.prefix_routes(fabric, "s3", forwarding_tables(fabric, down_ports={(1, 5)})[3])
    msgs = gateway.route_changes(1, before, after)
    assert len(msgs) == 2 and all(msg.command == 4 for msg in msgs)  # OFPFC_DELETE_STRICT of both prefixes
    assert gateway.route_changes(1, before, before) == []


def test_get_fabric_lists_the_gateway_uplinks() -> None:
    config = parse_config(lab_config(GatewayTopo(clients=1), [], rest={"enabled": False}))
    [uplink] = fabric_view(config, [1])["gateways"]
    assert (uplink["switch"], uplink["port"], uplink["prefixes"]) == ("s1", 2, ["192.168.99.0/24"])
    FabricViewAnswer.model_validate(fabric_view(config, [1]))
    assert fabric_view(parse_config({"fabric": FABRIC}), [])["gateways"] == []
