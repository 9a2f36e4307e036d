"""Paths across the static fabric, computed with networkx: per switch, the out port toward every host MAC."""

from __future__ import annotations

import networkx as nx

from nlb_sdn.config import Fabric


def fabric_graph(fabric: Fabric) -> nx.Graph:
    """The fabric as a graph: switch and host nodes, each edge carrying the ports at both ends."""
    graph = nx.Graph()
    for switch in fabric.switches:
        graph.add_node(("switch", switch.name))
    for link in fabric.links:
        graph.add_edge(("switch", link.a), ("switch", link.b), ports={link.a: link.a_port, link.b: link.b_port})
    for host in fabric.hosts:
        graph.add_edge(("host", host.name), ("switch", host.switch), ports={host.switch: host.port})
    return graph


def forwarding_tables(fabric: Fabric) -> dict[int, dict[str, int]]:
    """For every switch dpid, the output port toward each host MAC along a shortest-path tree rooted at the host.

    Each host's tree comes from one breadth-first search, so all switches agree on it and no packet can loop.
    Ties are broken by sorted node order, which makes the result deterministic.
    """
    graph = fabric_graph(fabric)
    ordered = nx.Graph()
    ordered.add_nodes_from(sorted(graph.nodes))
    ordered.add_edges_from(sorted(graph.edges(data=True), key=lambda edge: (min(edge[0], edge[1]), max(edge[0], edge[1]))))
    dpids = {s.name: s.dpid for s in fabric.switches}
    tables: dict[int, dict[str, int]] = {dpid: {} for dpid in dpids.values()}
    for host in fabric.hosts:
        root = ("host", host.name)
        paths = nx.single_source_shortest_path(ordered, root)
        for node, path in paths.items():
            kind, name = node
            if kind != "switch" or len(path) < 2:
                continue
            next_hop = path[-2]
            port = ordered.edges[node, next_hop]["ports"][name]
            tables[dpids[name]][host.mac] = port
    return tables


def host_ports(fabric: Fabric) -> dict[tuple[int, int], str]:
    """(dpid, port) of every host attachment point, mapped to the host name."""
    dpids = {s.name: s.dpid for s in fabric.switches}
    return {(dpids[h.switch], h.port): h.name for h in fabric.hosts}
