"""Paths across the fabric, computed with networkx: per switch, the out port toward every host MAC.

The live fabric is the configured one minus the links with a port down at either end and the links of switches that
are down (disconnected from the controller): the paths are recomputed whenever that changes (``docs/fabric.md``).
"""

from __future__ import annotations

from collections.abc import Set

import networkx as nx

from nlb_sdn.config import Fabric, Host, Member
from nlb_sdn.flows import tunnel
from nlb_sdn.health.handler import Attachment

Node = tuple[str, str]
"""A node of the fabric graph: ``("switch", name)`` or ``("host", name)``."""
PortRef = tuple[int, int]
"""A switch port: ``(dpid, port number)``."""
NO_PORTS: frozenset[PortRef] = frozenset()
NO_SWITCHES: frozenset[int] = frozenset()


def fabric_graph(
    fabric: Fabric, down_ports: Set[PortRef] = NO_PORTS, down_switches: Set[int] = NO_SWITCHES
) -> nx.Graph[Node]:
    """The live fabric as a graph: switch and host nodes, each edge carrying the ports at both ends.

    A link or host attachment with a port in ``down_ports`` at either end, or with a switch of ``down_switches``
    at either end, is left out.
    """
    dpids = {switch.name: switch.dpid for switch in fabric.switches}

    def live(name: str, port: int) -> bool:
        dpid = dpids[name]
        return dpid not in down_switches and (dpid, port) not in down_ports

    graph: nx.Graph[Node] = nx.Graph()
    for switch in fabric.switches:
        graph.add_node(("switch", switch.name))
    for link in fabric.links:
        if live(link.a, link.a_port) and live(link.b, link.b_port):
            graph.add_edge(("switch", link.a), ("switch", link.b), ports={link.a: link.a_port, link.b: link.b_port})
    for host in fabric.hosts:
        graph.add_node(("host", host.name))
        if (dpids[host.switch], host.port) not in down_ports:
            graph.add_edge(("host", host.name), ("switch", host.switch), ports={host.switch: host.port})
    return graph


def forwarding_tables(
    fabric: Fabric, down_ports: Set[PortRef] = NO_PORTS, down_switches: Set[int] = NO_SWITCHES
) -> dict[int, dict[str, int]]:
    """For every switch dpid, the output port toward each host MAC along a shortest-path tree rooted at the host.

    Each host's tree comes from one breadth-first search over the live fabric (``fabric_graph``), so all switches
    agree on it and no packet can loop; a switch with no live path to a host has no entry for it. Ties are broken by
    sorted node order, which makes the result deterministic.
    """
    graph = fabric_graph(fabric, down_ports, down_switches)
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


def fabric_ports(fabric: Fabric) -> set[PortRef]:
    """Every (dpid, port) the fabric lists: both ends of its links and its hosts' attachment points."""
    dpids = {s.name: s.dpid for s in fabric.switches}
    ports = {(dpids[h.switch], h.port) for h in fabric.hosts}
    for link in fabric.links:
        ports |= {(dpids[link.a], link.a_port), (dpids[link.b], link.b_port)}
    return ports


class FabricView:
    """The fabric as the core uses it: host MACs and attachments, switch dpids, live paths and tunnel labels."""

    def __init__(self) -> None:
        self.fabric = Fabric()
        self.host_macs: dict[str, str] = {}
        self.hosts_by_ip: dict[str, Host] = {}
        self.dpids: dict[str, int] = {}
        self.forwarding: dict[int, dict[str, int]] = {}
        self.labels: dict[str, int] = {}
        self.ports: set[PortRef] = set()
        self.down_ports: set[PortRef] = set()
        """Fabric ports reported down (port status or port description); their links and hosts are cut."""
        self.down_switches: set[int] = set()
        """Fabric switches disconnected from the controller: all their links are down for the others."""
        self.recomputations = 0
        """How many times a port or switch change recomputed the paths."""
        self._taken = False

    def update(self, fabric: Fabric) -> bool:
        """Take a new fabric description; True when it differs from the one in use (paths were recomputed)."""
        if self._taken and fabric == self.fabric:
            return False  # the object in use stays: its identity tells caches that nothing changed
        changed = fabric != self.fabric
        self._taken = True
        self.fabric = fabric
        self.host_macs = {host.ip: host.mac for host in fabric.hosts}
        self.hosts_by_ip = {host.ip: host for host in fabric.hosts}
        self.dpids = {switch.name: switch.dpid for switch in fabric.switches}
        self.ports = fabric_ports(fabric)
        self.down_ports &= self.ports
        self.down_switches &= set(self.dpids.values())
        self.forwarding = forwarding_tables(fabric, self.down_ports, self.down_switches)
        self.labels = tunnel.host_labels(fabric)
        return changed

    def set_port(self, dpid: int, port: int, up: bool) -> bool:
        """Take a fabric port's state; True when the live fabric changed (the paths were recomputed)."""
        ref = (dpid, port)
        if ref not in self.ports or (ref not in self.down_ports) == up:
            return False
        if up:
            self.down_ports.discard(ref)
        else:
            self.down_ports.add(ref)
        self._recompute()
        return True

    def set_switch(self, dpid: int, up: bool) -> bool:
        """Take a fabric switch's connection state; True when the live fabric changed (the paths were recomputed)."""
        if dpid not in self.forwarding or (dpid not in self.down_switches) == up:
            return False
        if up:
            self.down_switches.discard(dpid)
        else:
            self.down_switches.add(dpid)
        self._recompute()
        return True

    def live_switches(self) -> list[int]:
        """The fabric's switches not known to be down, in dpid order."""
        return sorted(dpid for dpid in self.forwarding if dpid not in self.down_switches)

    def _recompute(self) -> None:
        """The shortest-path trees over the live fabric."""
        self.forwarding = forwarding_tables(self.fabric, self.down_ports, self.down_switches)
        self.recomputations += 1

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
