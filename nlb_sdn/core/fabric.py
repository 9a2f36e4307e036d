"""Paths across the fabric, computed with networkx: per switch, the out port toward every host MAC.

The live fabric is the configured one minus the links with a port down at either end and the links of switches that
are down (disconnected from the controller): the paths are recomputed whenever that changes (``docs/fabric.md``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Set

import networkx as nx

from nlb_sdn.config import Fabric, Host, Member
from nlb_sdn.config.gateway import Gateway
from nlb_sdn.flows import tunnel
from nlb_sdn.health.handler import Attachment

Node = tuple[str, str]
"""A node of the fabric graph: ``("switch", name)``, ``("host", name)`` or ``("gateway", name)``."""
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
    for gateway in fabric.gateways:
        graph.add_node(("gateway", gateway.name))
        if (dpids[gateway.switch], gateway.port) not in down_ports:
            graph.add_edge(("gateway", gateway.name), ("switch", gateway.switch), ports={gateway.switch: gateway.port})
    return graph


def forwarding_tables(
    fabric: Fabric, down_ports: Set[PortRef] = NO_PORTS, down_switches: Set[int] = NO_SWITCHES
) -> dict[int, dict[str, int]]:
    """For every switch dpid, the output port toward each host MAC (and each gateway's router MAC) along a
    shortest-path tree rooted at the host (the gateway).

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
    roots = [(("host", host.name), host.mac) for host in fabric.hosts]
    roots += [(("gateway", gateway.name), gateway.router_mac) for gateway in fabric.gateways]
    for root, mac in roots:
        paths = nx.single_source_shortest_path(ordered, root)
        for node, path in paths.items():
            kind, name = node
            if kind != "switch" or len(path) < 2:
                continue
            next_hop = path[-2]
            port = ordered.edges[node, next_hop]["ports"][name]
            tables[dpids[name]][mac] = port
    return tables


def host_ports(fabric: Fabric) -> dict[tuple[int, int], str]:
    """(dpid, port) of every host attachment point, mapped to the host name."""
    dpids = {s.name: s.dpid for s in fabric.switches}
    return {(dpids[h.switch], h.port): h.name for h in fabric.hosts}


def fabric_ports(fabric: Fabric) -> set[PortRef]:
    """Every (dpid, port) the fabric lists: both ends of its links, its hosts' and its gateways' attachment points."""
    dpids = {s.name: s.dpid for s in fabric.switches}
    ports = {(dpids[h.switch], h.port) for h in fabric.hosts}
    ports |= {(dpids[g.switch], g.port) for g in fabric.gateways}
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
        self.gateway_routes: list[tuple[ipaddress.IPv4Network, Gateway]] = []
        """Every gateway prefix with its gateway, longest first (the first that holds an address wins)."""
        self.gateway_arp: dict[str, tuple[str, Gateway]] = {}
        """Gateway addresses answered by ARP: the fabric-side address and the router's, each with its MAC."""
        self.previous: dict[int, dict[str, int]] = {}
        """The forwarding tables before the last ``update`` (a config's fabric change is sent as the difference)."""
        self._taken = False

    def update(self, fabric: Fabric) -> bool:
        """Take a new fabric description; True when it differs from the one in use (paths were recomputed)."""
        if self._taken and fabric == self.fabric:
            return False  # the object in use stays: its identity tells caches that nothing changed
        changed = fabric != self.fabric
        self.previous = self.forwarding
        self._taken = True
        self.fabric = fabric
        self.host_macs = {host.ip: host.mac for host in fabric.hosts}
        self.host_macs.update({host.ipv6: host.mac for host in fabric.hosts if host.ipv6})
        self.hosts_by_ip = {host.ip: host for host in fabric.hosts}
        self.hosts_by_ip.update({host.ipv6: host for host in fabric.hosts if host.ipv6})
        self.dpids = {switch.name: switch.dpid for switch in fabric.switches}
        self.ports = fabric_ports(fabric)
        self.down_ports &= self.ports
        self.down_switches &= set(self.dpids.values())
        self.forwarding = forwarding_tables(fabric, self.down_ports, self.down_switches)
        self.labels = tunnel.host_labels(fabric)
        routes = [(network, gateway) for gateway in fabric.gateways for network in gateway.networks()]
        self.gateway_routes = sorted(routes, key=lambda route: -route[0].prefixlen)
        self.gateway_arp = {g.address: (g.mac, g) for g in fabric.gateways}
        self.gateway_arp |= {g.router_ip: (g.router_mac, g) for g in fabric.gateways}
        return changed

    def gateway_for(self, address: str) -> Gateway | None:
        """The gateway a client address is reached through: none for a fabric host, else the longest prefix's."""
        if address in self.hosts_by_ip or not self.gateway_routes:
            return None
        ip = ipaddress.IPv4Address(address)
        return next((gateway for network, gateway in self.gateway_routes if ip in network), None)

    def gateway_arp_mac(self, address: str, dpid: int, port: int) -> str | None:
        """The MAC an ARP request for ``address`` from ``(dpid, port)`` is answered with, on the gateways' behalf.

        A gateway's fabric-side address answers with its MAC, its router's address with the router's MAC, and an
        address in its prefixes with its fabric-side MAC (table 3 routes what is sent there): proxy ARP, as a router
        interface does. A gateway's own uplink gets no answer for its router or its prefixes (they are its side).
        """
        listed = self.gateway_arp.get(address)
        if listed is not None:
            mac, owner = listed
            return None if mac == owner.router_mac and self._uplink(owner, dpid, port) else mac
        gateway = self.gateway_for(address)
        if gateway is None or self._uplink(gateway, dpid, port):
            return None
        return gateway.mac

    def _uplink(self, gateway: Gateway, dpid: int, port: int) -> bool:
        """Whether ``(dpid, port)`` is the gateway's uplink port."""
        return self.dpids.get(gateway.switch) == dpid and gateway.port == port

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
