"""Common base of the lab topologies: explicit ports, addresses and dpids, and the static ``fabric`` config section.

A LabTopo is a plain description (no Mininet needed): the fabric section, addresses and ports come from it on any
machine. Only :meth:`LabTopo.mininet_topo`, which the lab harness calls to build the network, imports Mininet (the
``lab`` extra).
"""

from __future__ import annotations

import copy
import enum
import re
from typing import TYPE_CHECKING, Any

from nlb_sdn.config import parse_config

if TYPE_CHECKING:
    from mininet.topo import Topo

PREFIX = "10.0.0."
PREFIX_LEN = 24
FIRST_CLIENT = 1
FIRST_BACKEND = 11
FIRST_ROUTER = 91
"""Request routers r1, r2, ... take the last addresses (10.0.0.91 up), so backends stop at 10.0.0.90 when there are
routers."""
LAST_HOST = 99
MGMT_PREFIX = "10.99.0."
MGMT_SWITCH = "m0"
MGMT_ROOT = "mgmt0"
MGMT_ROOT_OCTET = 254

SWITCH_OPTS: dict[str, Any] = {
    "datapath": "user",
    "protocols": "OpenFlow13",
    "failMode": "secure",
}
"""Mininet switch options every lab switch is created with (an OVSSwitch: userspace OVS, OpenFlow 1.3, no standalone
fallback)."""


class SwitchKind(enum.Enum):
    """Which Mininet switch class a lab switch becomes."""

    OPENFLOW = "openflow"
    """An OVSSwitch of the data path, with SWITCH_OPTS, driven by the controller."""
    BRIDGE = "bridge"
    """A plain OVS learning bridge (OVSBridge) without a controller: the management network."""


def natural_key(text: str) -> list[int | str]:
    """Sort key that orders names as Mininet does (``c2`` before ``c10``)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


IPV6_PREFIX = "fd00::"
"""Lab hosts' IPv6 addresses (``ipv6`` topologies): fd00::<the IPv4 last byte, in decimal digits>, prefix /64."""
IPV6_PREFIX_LEN = 64


def host_address(octet: int) -> tuple[str, str]:
    """The (ip, mac) of the lab host whose last address byte is ``octet``; the MAC spells the octet in decimal."""
    if not 1 <= octet <= LAST_HOST:
        raise ValueError(f"host octet {octet} is outside 1..{LAST_HOST}")
    return f"{PREFIX}{octet}", f"00:00:00:00:00:{octet:02d}"


class LabTopo:
    """A lab topology whose every port, address and dpid is explicit, so it emits its static fabric config without
    root or Mininet; :meth:`mininet_topo` turns it into the Mininet Topo the lab is built from.

    The read side (``hosts``, ``switches``, ``links``, ``nodeInfo``) answers as a Mininet Topo of it would.
    """

    def __init__(
        self,
        clients: int = 3,
        backends: int = 3,
        mgmt: bool = False,
        trunk_mtu: int | None = None,
        routers: int = 0,
        ipv6: bool = False,
    ) -> None:
        """Check the host counts and build the topology (plus the management network when ``mgmt``).

        ``routers`` request-router hosts r1.. (10.0.0.91..) are placed by the topology (FabricTopo: on the client
        edge) and, with ``mgmt``, join the management network like the backends.

        ``trunk_mtu`` sets the MTU of both ends of every switch-to-switch link (tunnel mode's MPLS label needs 1504:
        the userspace datapath never fragments, and host links only ever see the popped, unlabelled packets).

        ``ipv6`` gives every data host an IPv6 address too (dual stack, ``host_ipv6``); other labs keep IPv6 off
        on their hosts, so no stray neighbour discovery or router solicitation reaches the switches.
        """
        if not 1 <= clients <= FIRST_BACKEND - FIRST_CLIENT:
            raise ValueError(f"clients must be 1..{FIRST_BACKEND - FIRST_CLIENT}, got {clients}")
        if not 1 <= backends <= LAST_HOST - FIRST_BACKEND + 1:
            raise ValueError(f"backends must be 1..{LAST_HOST - FIRST_BACKEND + 1}, got {backends}")
        if not 0 <= routers <= LAST_HOST - FIRST_ROUTER + 1 or (routers and FIRST_BACKEND + backends > FIRST_ROUTER):
            raise ValueError(
                f"routers must be 0..{LAST_HOST - FIRST_ROUTER + 1}, with at most "
                f"{FIRST_ROUTER - FIRST_BACKEND} backends, got {routers} routers and {backends} backends"
            )
        self.routers: list[str] = [f"r{i}" for i in range(1, routers + 1)]
        self.clients: list[str] = [f"c{i}" for i in range(1, clients + 1)]
        self.backends: list[str] = [f"h{i}" for i in range(1, backends + 1)]
        self._dpids: dict[str, int] = {}
        self._attach: dict[str, tuple[str, int]] = {}
        self._hosts: dict[str, dict[str, Any]] = {}
        self._switches: dict[str, tuple[SwitchKind, dict[str, Any]]] = {}
        self._links: list[dict[str, Any]] = []
        self.mgmt = mgmt
        self.trunk_mtu = trunk_mtu
        self.ipv6 = ipv6
        self._ipv6: dict[str, str] = {}
        self.build()
        if mgmt:
            self._add_mgmt_network()

    def build(self) -> None:
        """Add the switches, hosts and links (every topology defines its own)."""
        raise NotImplementedError

    def _add_mgmt_network(self) -> None:
        """A management switch m0 (plain L2 bridge, no controller) joining the root namespace and the eth1 of every
        backend and router.

        Agents reach the controller over it, never over the data path. The root namespace side is ``mgmt0-eth0``
        with 10.99.0.254/24; backend hN gets 10.99.0.<its data octet>.
        """
        self._switches[MGMT_SWITCH] = (SwitchKind.BRIDGE, {"datapath": "user", "dpid": "99"})
        self._hosts[MGMT_ROOT] = {"inNamespace": False, "ip": f"{MGMT_PREFIX}{MGMT_ROOT_OCTET}/24"}
        self._add_link(MGMT_ROOT, 0, MGMT_SWITCH, 1)
        for index, name in enumerate(self.backends + self.routers):
            octet = int(self.host_ip(name).rsplit(".", 1)[1])
            self._add_link(name, 1, MGMT_SWITCH, index + 2, params1={"ip": f"{MGMT_PREFIX}{octet}/24"})

    def _add_link(self, node1: str, port1: int, node2: str, port2: int, **params: Any) -> None:
        """Record a link with explicit ports and Mininet link parameters."""
        self._links.append({**params, "node1": node1, "node2": node2, "port1": port1, "port2": port2})

    def mgmt_ip(self, name: str) -> str:
        """The management-network address of a backend, or of the root namespace for ``mgmt0``."""
        if name == MGMT_ROOT:
            return f"{MGMT_PREFIX}{MGMT_ROOT_OCTET}"
        return f"{MGMT_PREFIX}{self.host_ip(name).rsplit('.', 1)[1]}"

    def hosts(self) -> list[str]:
        """Every host, data path and management, in Mininet's (natural) order."""
        return sorted(self._hosts, key=natural_key)

    def switches(self) -> list[str]:
        """Every switch, data path and management, in Mininet's (natural) order."""
        return sorted(self._switches, key=natural_key)

    def links(self, sort: bool = False, withInfo: bool = False) -> list[tuple[Any, ...]]:
        """The links as ``(node1, node2)``, or ``(node1, node2, info)`` with ``withInfo``; ``sort`` orders them by
        name as Mininet's ``Topo.links`` does, else they come in the order they were added."""
        links = [
            (link["node1"], link["node2"], link) if withInfo else (link["node1"], link["node2"]) for link in self._links
        ]
        if sort:
            links.sort(key=lambda link: (natural_key(link[0]), natural_key(link[1])))
        return links

    def nodeInfo(self, name: str) -> dict[str, Any]:
        """The Mininet parameters of a host or switch (a switch's without its class, see :meth:`mininet_topo`)."""
        if name in self._switches:
            return {"isSwitch": True, **self._switches[name][1]}
        return self._hosts[name]

    def data_hosts(self) -> list[str]:
        """The hosts attached to the data-path fabric (clients and backends), sorted."""
        return [name for name in self.hosts() if name in self._attach]

    def data_switches(self) -> list[str]:
        """The OpenFlow switches of the data-path fabric (not the management bridge), sorted."""
        return [name for name in self.switches() if name in self._dpids]

    def add_lab_switch(self, name: str, dpid: int) -> str:
        """Add an OVS userspace switch with an explicit dpid."""
        self._dpids[name] = dpid
        self._switches[name] = (SwitchKind.OPENFLOW, {"dpid": f"{dpid:x}", **SWITCH_OPTS})
        return name

    def add_lab_host(self, name: str, octet: int, switch: str, port: int) -> str:
        """Add a host with explicit IP and MAC on ``switch`` port ``port`` (the host side is always eth0)."""
        ip, mac = host_address(octet)
        self._hosts[name] = {"ip": f"{ip}/{PREFIX_LEN}", "mac": mac, "defaultRoute": f"dev {name}-eth0"}
        if self.ipv6:
            self._ipv6[name] = f"{IPV6_PREFIX}{octet}"
        self._add_link(name, 0, switch, port)
        self._attach[name] = (switch, port)
        return name

    def add_trunk(self, a: str, a_port: int, b: str, b_port: int) -> None:
        """Add a switch-to-switch link with explicit ports on both ends (with ``trunk_mtu`` on both when set)."""
        mtu = {"ifconfig": f"mtu {self.trunk_mtu}"} if self.trunk_mtu else {}
        self._add_link(a, a_port, b, b_port, **mtu)

    def host_ip(self, name: str) -> str:
        """The IPv4 address of host ``name`` (without prefix length)."""
        return str(self._hosts[name]["ip"]).split("/")[0]

    def host_ipv6(self, name: str) -> str | None:
        """The IPv6 address of host ``name`` (without prefix length), None when the topology has no IPv6."""
        return self._ipv6.get(name)

    def host_mac(self, name: str) -> str:
        """The MAC address of host ``name``."""
        return str(self._hosts[name]["mac"])

    def dpids(self) -> dict[str, int]:
        """Switch name to dpid."""
        return dict(self._dpids)

    def members(self, port: int = 80, backends: list[str] | None = None, weight: int = 1) -> list[dict[str, Any]]:
        """VIP member entries (config dicts) for the given backends (all by default), named after the hosts."""
        names = self.backends if backends is None else backends
        return [{"name": n, "address": self.host_ip(n), "port": port, "weight": weight} for n in names]

    def fabric_config(self) -> dict[str, Any]:
        """The config's ``fabric`` section (switches, switch links, hosts) describing exactly this topology."""
        switches = [{"name": name, "dpid": self._dpids[name]} for name in self.data_switches()]
        links = []
        for node1, node2, info in self.links(sort=True, withInfo=True):
            if node1 in self._dpids and node2 in self._dpids:
                links.append({"a": node1, "a_port": info["port1"], "b": node2, "b_port": info["port2"]})
        hosts = []
        for name in self.data_hosts():
            switch, port = self._attach[name]
            host = {"name": name, "ip": self.host_ip(name), "mac": self.host_mac(name), "switch": switch, "port": port}
            if name in self._ipv6:
                host["ipv6"] = self._ipv6[name]
            hosts.append(host)
        return {"switches": switches, "links": links, "hosts": hosts}

    def mininet_topo(self) -> Topo:
        """This topology as a Mininet Topo: the same nodes, parameters and ports (imports Mininet, the ``lab``
        extra)."""
        from mininet.node import OVSBridge, OVSSwitch
        from mininet.topo import Topo

        switch_classes = {SwitchKind.OPENFLOW: OVSSwitch, SwitchKind.BRIDGE: OVSBridge}
        topo = Topo()
        for name, (kind, params) in self._switches.items():
            topo.addSwitch(name, cls=switch_classes[kind], **params)
        for name, params in self._hosts.items():
            topo.addHost(name, **params)
        for link in self._links:
            topo.addLink(**link)
        return topo


def lab_config(topo: LabTopo, vips: list[dict[str, Any]], **controller_overrides: Any) -> dict[str, Any]:
    """A whole, validated config dict: controller section (REST on 127.0.0.1:8080 unless overridden), vips, fabric.

    ``controller_overrides`` are keys of the ``controller`` section; a ``rest`` mapping is merged into the default.
    """
    controller: dict[str, Any] = {"rest": {"enabled": True, "host": "127.0.0.1", "port": 8080}}
    for key, value in controller_overrides.items():
        if key == "rest" and isinstance(value, dict):
            controller["rest"].update(value)
        else:
            controller[key] = value
    config = {"version": 1, "controller": controller, "vips": copy.deepcopy(vips), "fabric": topo.fabric_config()}
    parse_config(config, "<lab_config>")
    return config
