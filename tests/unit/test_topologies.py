"""Lab topologies: they build without root and emit a valid fabric section, unique explicit ports and a diagram;
their Mininet topologies (the lab extra) carry the same nodes, ports and parameters."""

from __future__ import annotations

import re

import networkx as nx
import pytest

from nlb_sdn.config import parse_config
from topologies import SWITCH_OPTS, TOPOLOGIES, FabricTopo, MultiHopTopo, SingleTopo, lab_config

SIZES = [(1, 1), (3, 3), (10, 89)]


@pytest.mark.parametrize("name", sorted(TOPOLOGIES))
@pytest.mark.parametrize(("clients", "backends"), SIZES)
def test_topology_builds_and_fabric_validates(name, clients, backends):
    topo = TOPOLOGIES[name](clients=clients, backends=backends)
    assert topo.clients == [f"c{i}" for i in range(1, clients + 1)]
    assert topo.backends == [f"h{i}" for i in range(1, backends + 1)]
    assert sorted(topo.hosts()) == sorted(topo.clients + topo.backends)
    fabric = parse_config({"fabric": topo.fabric_config()}).fabric
    assert {h.name for h in fabric.hosts} == set(topo.hosts())
    assert {s.name: s.dpid for s in fabric.switches} == topo.dpids()


@pytest.mark.parametrize("name", sorted(TOPOLOGIES))
def test_ports_are_explicit_unique_and_match_the_mininet_links(name):
    pytest.importorskip("mininet")
    lab_topo = TOPOLOGIES[name]()
    topo = lab_topo.mininet_topo()
    seen: set[tuple[str, int]] = set()
    for node1, node2, info in topo.links(withInfo=True):
        for node, port in ((node1, info["port1"]), (node2, info["port2"])):
            assert port is not None
            assert (node, port) not in seen, f"{node}:{port} used twice"
            seen.add((node, port))
            if not topo.isSwitch(node):
                assert port == 0
    fabric = lab_topo.fabric_config()
    for host in fabric["hosts"]:
        assert (host["switch"], host["port"]) in seen
        assert topo.port(host["name"], host["switch"]) == (0, host["port"])
    for link in fabric["links"]:
        assert topo.port(link["a"], link["b"]) == (link["a_port"], link["b_port"])


@pytest.mark.parametrize("name", sorted(TOPOLOGIES))
def test_addresses_and_switch_options(name):
    mininet_node = pytest.importorskip("mininet.node")
    topo = TOPOLOGIES[name]()
    fabric = topo.fabric_config()
    for host in fabric["hosts"]:
        octet = int(host["ip"].rsplit(".", 1)[1])
        assert host["ip"].startswith("10.0.0.")
        assert host["mac"] == f"00:00:00:00:00:{octet:02d}"
        assert (octet < 11) == host["name"].startswith("c")
        assert topo.nodeInfo(host["name"])["ip"] == host["ip"] + "/24"
    for switch in topo.switches():
        info = topo.mininet_topo().nodeInfo(switch)
        assert info["cls"] is mininet_node.OVSSwitch
        assert (info["datapath"], info["protocols"], info["failMode"]) == ("user", "OpenFlow13", "secure")
        assert int(info["dpid"], 16) == topo.dpids()[switch]
    assert SWITCH_OPTS["datapath"] == "user"


@pytest.mark.parametrize("name", sorted(TOPOLOGIES))
def test_the_mininet_topo_has_the_same_nodes_links_and_parameters(name):
    mininet_node = pytest.importorskip("mininet.node")
    lab_topo = TOPOLOGIES[name](mgmt=True, trunk_mtu=1504)
    topo = lab_topo.mininet_topo()
    assert (topo.hosts(), topo.switches()) == (lab_topo.hosts(), lab_topo.switches())
    assert topo.links(sort=True, withInfo=True) == lab_topo.links(sort=True, withInfo=True)
    for node in topo.nodes():
        assert {key: value for key, value in topo.nodeInfo(node).items() if key != "cls"} == lab_topo.nodeInfo(node)
    assert topo.nodeInfo("m0")["cls"] is mininet_node.OVSBridge and "cls" not in lab_topo.nodeInfo("s1")


@pytest.mark.parametrize("name", sorted(TOPOLOGIES))
def test_docstring_has_a_wiring_diagram(name):
    topo_cls = TOPOLOGIES[name]
    doc = topo_cls.__doc__ or ""
    topo = topo_cls()
    assert "::" in doc and "+--------+" in doc
    for switch in topo.switches():
        assert f"dpid {topo.dpids()[switch]}" in doc
    for host in topo.fabric_config()["hosts"]:
        name, ip, where = host["name"], re.escape(host["ip"]), f"{host['switch']}:{host['port']}"
        assert re.search(rf"\b{name} {ip}\s+--- {where}\b|\b{where}\s+--- {name} {ip}\b", doc), host
    for link in topo.fabric_config()["links"]:
        assert f"{link['a']}:{link['a_port']}" in doc and f"{link['b']}:{link['b_port']}" in doc


def _graph(topo) -> nx.MultiGraph:
    graph = nx.MultiGraph()
    for link in topo.fabric_config()["links"]:
        graph.add_edge(link["a"], link["b"])
    return graph


def test_fabric_has_multiple_paths_between_edges():
    topo = FabricTopo()
    graph = _graph(topo)
    assert sorted(graph.nodes) == ["s1", "s2", "s3", "s4"]
    assert nx.edge_connectivity(graph, "s1", "s2") == 2
    paths = sorted(nx.all_simple_paths(graph, "s1", "s2"))
    assert paths == [["s1", "s3", "s2"], ["s1", "s4", "s2"]]
    assert nx.cycle_basis(nx.Graph(graph))
    fabric = topo.fabric_config()
    assert {h["switch"] for h in fabric["hosts"] if h["name"].startswith("c")} == {"s1"}
    assert {h["switch"] for h in fabric["hosts"] if h["name"].startswith("h")} == {"s2"}


def test_multihop_puts_clients_and_backends_on_two_edges_each_behind_one_core():
    topo = MultiHopTopo(clients=4, backends=4)
    graph = _graph(topo)
    assert sorted(graph.nodes) == ["s1", "s2", "s3", "s4", "s5"]
    assert nx.is_tree(nx.Graph(graph))
    fabric = topo.fabric_config()
    where = {h["name"]: (h["switch"], h["port"]) for h in fabric["hosts"]}
    assert where == {
        "c1": ("s1", 2),
        "c2": ("s2", 2),
        "c3": ("s1", 3),
        "c4": ("s2", 3),
        "h1": ("s4", 2),
        "h2": ("s5", 2),
        "h3": ("s4", 3),
        "h4": ("s5", 3),
    }
    for client in ("s1", "s2"):
        for backend in ("s4", "s5"):
            assert nx.shortest_path(graph, client, backend) == [client, "s3", backend]
    assert topo.core_port(0) == 5


def test_single_has_no_links():
    topo = SingleTopo(clients=2, backends=4)
    fabric = topo.fabric_config()
    assert fabric["links"] == []
    assert [h["port"] for h in fabric["hosts"]] == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize(("clients", "backends"), [(0, 3), (11, 3), (3, 0), (3, 90)])
def test_host_counts_are_bounded(clients, backends):
    with pytest.raises(ValueError):
        FabricTopo(clients=clients, backends=backends)


def test_lab_config_validates_and_merges_controller_overrides():
    topo = FabricTopo()
    vips = [{"name": "web", "address": "10.0.0.100", "port": 80, "members": topo.members()}]
    config = lab_config(topo, vips, lbu_id=3, rest={"port": 8181})
    model = parse_config(config)
    assert model.controller.lbu_id == 3
    assert (model.controller.rest.host, model.controller.rest.port) == ("127.0.0.1", 8181)
    assert [m.name for m in model.vips[0].members] == ["h1", "h2", "h3"]
    assert [m.address for m in model.vips[0].members] == ["10.0.0.11", "10.0.0.12", "10.0.0.13"]
    assert config["fabric"] == topo.fabric_config()
    assert lab_config(topo, [])["controller"]["rest"]["port"] == 8080


def test_lab_config_rejects_a_bad_config():
    topo = SingleTopo()
    with pytest.raises(ValueError, match="also a host address"):
        lab_config(topo, [{"name": "web", "address": "10.0.0.11", "port": 80}])
