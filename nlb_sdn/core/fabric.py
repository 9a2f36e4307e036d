"""Paths across the static fabric, computed with networkx: per switch, the out port toward every host MAC."""

from __future__ import annotations

import networkx as nx

from nlb_sdn.config import Fabric, Host, Member
from nlb_sdn.flows import tunnel
from nlb_sdn.health.handler import Attachment

Node = tuple[str, str]
"""A node of the fabric graph: ``("switch", name)`` or ``("host", name)``."""


def fabric_graph(fabric: Fabric) -> nx.Graph[Node]:
    """The fabric as a graph: switch and host nodes, each edge carrying the ports at both ends."""
    graph: nx.Graph[Node] = nx.Graph()
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
    ordered: nx.Graph[Node] = nx.Graph()
    ordered.add_nodes_from(sorted(graph.nodes))
    ordered.add_edges_from(
        sorted(graph.edges(data=True), key=lambda edge: (min(edge[0], edge[1]), max(edge[0], edge[1])))
    )
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


class FabricView:
    """The static fabric as the core uses it: host MACs and attachments, switch dpids, paths and tunnel labels."""

    def __init__(self) -> None:
        self.fabric = Fabric()
        self.host_macs: dict[str, str] = {}
        self.hosts_by_ip: dict[str, Host] = {}
        self.dpids: dict[str, int] = {}
        self.forwarding: dict[int, dict[str, int]] = {}
        self.labels: dict[str, int] = {}

    def update(self, fabric: Fabric) -> bool:
        """Take a new fabric description; True when it differs from the one in use (paths were recomputed)."""
        if fabric == self.fabric and self.host_macs:
            return False
        changed = fabric != self.fabric
        self.fabric = fabric
        self.host_macs = {host.ip: host.mac for host in fabric.hosts}
        self.hosts_by_ip = {host.ip: host for host in fabric.hosts}
        self.dpids = {switch.name: switch.dpid for switch in fabric.switches}
        self.forwarding = forwarding_tables(fabric)
        self.labels = tunnel.host_labels(fabric)
        return changed

    def known_switch(self, dpid: int) -> bool:
        """Whether the fabric lists this dpid."""
        return dpid in self.forwarding

    def switch_name(self, dpid: int) -> str | None:
        """The fabric's name of a switch, if it lists the dpid."""
        return next((name for name, value in self.dpids.items() if value == dpid), None)

    def member_mac(self, address: str, configured: str) -> str:
        """The MAC to rewrite toward a member: configured, or the fabric host's."""
        return configured or self.host_macs.get(address, "")

    def has_mac(self, member: Member) -> bool:
        """Whether packets can be rewritten toward the member (its MAC is configured or a fabric host's)."""
        return bool(self.member_mac(member.address, member.mac))

    def attachment(self, member: Member) -> Attachment | None:
        """Where the member is attached (for controller probes), if the fabric lists it."""
        host = self.hosts_by_ip.get(member.address)
        dpid = self.dpids.get(host.switch) if host else None
        if host is None or dpid is None:
            return None
        return Attachment(dpid, host.port, self.member_mac(member.address, member.mac))
