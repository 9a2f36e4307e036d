"""Tunnel mode: host labels, label paths, the pure builders, the config rules and the core's connection view."""

from __future__ import annotations

from typing import Any

import pytest

from nlb_sdn.config import ConfigError, Fabric, parse_config
from nlb_sdn.core.fabric import forwarding_tables
from nlb_sdn.core.frames import ETH_TYPE_IP
from nlb_sdn.flows.builders import NatRoute
from nlb_sdn.flows.pipeline import Cookie, CookieKind, Priority, Table
from nlb_sdn.flows.tunnel import (
    ETH_TYPE_MPLS,
    LABEL_BASE,
    LABEL_OVERFLOW,
    LabelHop,
    TunnelRoute,
    connection_flows,
    host_labels,
    label_deletes,
    label_flows,
    label_hops,
    route_mode,
    tunnel_base_deletes,
    tunnel_base_flows,
    tunnel_connection_deletes,
    tunnel_vip_deletes,
)
from nlb_sdn.framework import ofproto_v1_3 as ofp, ofproto_v1_3_parser as parser
from tests.frames import syn_frame
from tests.lib.shell_double import ShellDouble
from topologies import FabricTopo, lab_config

VIP = "10.0.0.100"


def route(**changes: Any) -> TunnelRoute:
    """A tunnel route from c1:40000 to the VIP, member h1 (label 0x1000b)."""
    fields: dict[str, Any] = dict(
        client_ip="10.0.0.1",
        client_port=40000,
        vip_ip=VIP,
        vip_port=80,
        vip_mac="02:4e:0a:00:00:64",
        member_address="10.0.0.11",
        member_port=80,
        member_mac="00:00:00:00:00:11",
        cookie=0x0301000100000011,
        idle_timeout=15,
        hard_timeout=0,
        label=0x1000B,
    )
    fields.update(changes)
    return TunnelRoute(**fields)


def fabric_data(mode: str = "tunnel", **vip: Any) -> dict[str, Any]:
    """A FabricTopo config with VIP web in ``mode`` over h1..h3:80 (``vip`` overrides keys of the VIP)."""
    topo = FabricTopo()
    return lab_config(
        topo,
        [{"name": "web", "address": VIP, "port": 80, "mode": mode, "members": topo.members(), **vip}],
        rest={"enabled": False},
    )


def vars_of(value: Any) -> dict[str, Any]:
    """The fields of a slots dataclass."""
    return {name: getattr(value, name) for name in value.__dataclass_fields__}


def instructions(msg: Any) -> list[tuple[str, Any]]:
    """A flow-mod's instructions as (kind, detail) pairs that read well in assertions."""
    found: list[tuple[str, Any]] = []
    for inst in msg.instructions:
        if isinstance(inst, parser.OFPInstructionGotoTable):
            found.append(("goto", inst.table_id))
            continue
        for action in inst.actions:
            if isinstance(action, parser.OFPActionSetField):
                found.append(("set", (action.key, action.value)))
            elif isinstance(action, parser.OFPActionOutput):
                found.append(("output", action.port))
            else:
                found.append((type(action).__name__, action.ethertype))
    return found


def test_labels_spell_the_low_16_bits_of_the_address_and_stay_clear_of_reserved_labels() -> None:
    fabric = Fabric.model_validate(FabricTopo().fabric_config())
    labels = host_labels(fabric)
    assert labels["00:00:00:00:00:11"] == 0x1000B and labels["00:00:00:00:00:01"] == 0x10001
    assert len(set(labels.values())) == len(fabric.hosts) and min(labels.values()) >= LABEL_BASE


def test_hosts_whose_low_16_bits_collide_get_overflow_labels_in_address_order() -> None:
    data = FabricTopo().fabric_config()
    data["hosts"][0]["ip"] = "10.1.0.11"  # c1: same low 16 bits as h1 (10.0.0.11), higher address
    labels = host_labels(Fabric.model_validate(data))
    assert labels["00:00:00:00:00:11"] == 0x1000B
    assert labels[data["hosts"][0]["mac"]] == LABEL_OVERFLOW


def test_label_hops_pop_only_on_the_hosts_own_edge() -> None:
    fabric = Fabric.model_validate(FabricTopo().fabric_config())
    labels = host_labels(fabric)
    tables = forwarding_tables(fabric)
    edge = {hop.label: hop for hop in label_hops(fabric, 2, tables[2], labels)}
    core = {hop.label: hop for hop in label_hops(fabric, 3, tables[3], labels)}
    assert edge[0x1000B] == LabelHop(0x1000B, 3, "00:00:00:00:00:11")
    assert edge[0x10001].host_mac is None and edge[0x10001].port in (1, 2)
    assert all(hop.host_mac is None for hop in core.values()) and core[0x1000B].port == 2


def test_label_flows_forward_or_pop_and_address_the_host() -> None:
    transit, last = label_flows(1, [LabelHop(0x1000C, 2), LabelHop(0x1000B, 3, "00:00:00:00:00:11")])[::-1]
    for msg in (transit, last):
        assert (msg.table_id, msg.priority) == (Table.TUNNEL, Priority.TUNNEL_LABEL)
        assert Cookie.decode(msg.cookie).kind == CookieKind.FABRIC and msg.idle_timeout == 0
    assert dict(transit.match.items()) == {"eth_type": ETH_TYPE_MPLS, "mpls_label": 0x1000C}
    assert instructions(transit) == [("output", 2)]
    assert instructions(last) == [
        ("OFPActionPopMpls", ETH_TYPE_IP),
        ("set", ("eth_dst", "00:00:00:00:00:11")),
        ("output", 3),
    ]


def test_tunnel_base_sends_mpls_to_the_label_table_and_drops_unknown_labels() -> None:
    to_labels, miss = tunnel_base_flows(1)
    assert (to_labels.table_id, dict(to_labels.match.items())) == (Table.CLASSIFY, {"eth_type": ETH_TYPE_MPLS})
    assert instructions(to_labels) == [("goto", Table.TUNNEL)]
    assert (miss.table_id, miss.priority, instructions(miss)) == (Table.TUNNEL, Priority.MISS, [])
    deletes = tunnel_base_deletes() + label_deletes()
    assert [(m.command, m.table_id) for m in deletes] == [
        (ofp.OFPFC_DELETE_STRICT, Table.CLASSIFY),
        (ofp.OFPFC_DELETE_STRICT, Table.TUNNEL),
        (ofp.OFPFC_DELETE, Table.TUNNEL),
    ]
    assert deletes[2].cookie_mask and Cookie.decode(deletes[2].cookie).kind == CookieKind.FABRIC


def test_a_tunnel_connection_is_one_entry_pushing_the_label_with_its_timers() -> None:
    [msg] = connection_flows(route())
    assert (msg.table_id, msg.priority, msg.cookie) == (Table.CONNECTIONS, Priority.CONNECTION, 0x0301000100000011)
    assert (msg.idle_timeout, msg.hard_timeout, msg.flags) == (15, 0, ofp.OFPFF_SEND_FLOW_REM)
    assert dict(msg.match.items()) == {
        "eth_type": ETH_TYPE_IP,
        "ip_proto": 6,
        "ipv4_src": "10.0.0.1",
        "ipv4_dst": VIP,
        "tcp_src": 40000,
        "tcp_dst": 80,
    }
    assert instructions(msg) == [
        ("OFPActionPushMpls", ETH_TYPE_MPLS),
        ("set", ("mpls_label", 0x1000B)),
        ("goto", Table.TUNNEL),
    ]
    [delete] = tunnel_connection_deletes(route())
    assert (delete.command, delete.table_id, dict(delete.match.items())) == (
        ofp.OFPFC_DELETE_STRICT,
        Table.CONNECTIONS,
        dict(msg.match.items()),
    )
    [vip_delete] = tunnel_vip_deletes(1, 7)
    assert Cookie.decode(vip_delete.cookie) == Cookie(CookieKind.TUNNEL, 1, 7, 0)
    assert vip_delete.cookie_mask == 0xFF00FFFF00000000


def test_nat_routes_still_build_the_nat_pair() -> None:
    nat = NatRoute(**{k: v for k, v in vars_of(route()).items() if k != "label"})
    assert [m.table_id for m in connection_flows(nat)] == [Table.CONNECTIONS, Table.REVERSE]
    assert (route_mode(nat), route_mode(route())) == ("nat", "tunnel")


@pytest.mark.parametrize(
    "vip, reason",
    [
        ({"dispatch": "switch"}, "mode tunnel needs dispatch controller and granularity connection"),
        (
            {"affinity": "client_ip", "granularity": "session"},
            "mode tunnel needs dispatch controller and granularity connection",
        ),
    ],
)
def test_tunnel_mode_refuses_what_it_cannot_do(vip: dict[str, Any], reason: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(fabric_data(**vip))
    assert err.value.reason == reason


def test_tunnel_members_listen_on_the_vip_port_and_are_fabric_hosts() -> None:
    data = fabric_data()
    data["vips"][0]["members"][0]["port"] = 8080
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    assert "members must listen on the VIP's port 80" in err.value.reason
    data = fabric_data()
    data["vips"][0]["members"].append({"name": "far", "address": "10.9.0.1", "port": 80, "mac": "00:00:00:00:09:01"})
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    assert "is not a host of the fabric" in err.value.reason


def test_the_core_plumbs_one_tunnel_entry_and_shows_mode_and_label() -> None:
    lb = ShellDouble(parse_config(fabric_data()))
    frame = syn_frame("10.0.0.1", 40000, VIP, 80)
    msgs = lb.handle_packet_in(1, 3, frame, len(frame), Table.CONNECTIONS, 1.0)
    assert [type(m).__name__ for m in msgs] == ["OFPFlowMod", "OFPPacketOut"]
    [conn] = lb.connections()
    assert conn["mode"] == "tunnel" and conn["cookie"].startswith("0x03")
    assert conn["label"] == LABEL_BASE | int(conn["member_address"].split(":")[0].rsplit(".", 1)[1])
    put = lb.dam_ops[-1]
    assert put.verb == "put" and put.data["mode"] == "tunnel"


def test_nat_connections_have_no_label() -> None:
    lb = ShellDouble(parse_config(fabric_data(mode="nat")))
    frame = syn_frame("10.0.0.1", 40000, VIP, 80)
    lb.handle_packet_in(1, 3, frame, len(frame), Table.CONNECTIONS, 1.0)
    [conn] = lb.connections()
    assert conn["mode"] == "nat" and "label" not in conn


def test_tunnel_members_cannot_be_probed_by_the_controller() -> None:
    data = fabric_data()
    data["vips"][0]["members"][1]["health"] = "probe"
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    assert "probe replies (to the VIP) never leave them" in err.value.reason


def test_the_trunk_mtu_option_sets_only_switch_to_switch_links() -> None:
    topo = FabricTopo(trunk_mtu=1504)
    for node1, node2, info in topo.links(sort=True, withInfo=True):
        trunk = node1 in topo.dpids() and node2 in topo.dpids()
        assert info.get("ifconfig") == ("mtu 1504" if trunk else None), (node1, node2)
    assert not [info for _, _, info in FabricTopo().links(withInfo=True) if "ifconfig" in info]
    assert FabricTopo(trunk_mtu=1504).fabric_config() == FabricTopo().fabric_config()
