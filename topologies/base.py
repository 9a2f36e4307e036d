"""Common base of the lab topologies: explicit ports, addresses and dpids, and the static ``fabric`` config section."""

from __future__ import annotations

import copy
from typing import Any

from mininet.node import OVSBridge, OVSSwitch
from mininet.topo import Topo

from nlb_sdn.config import parse_config

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
    "cls": OVSSwitch,
    "datapath": "user",
    "protocols": "OpenFlow13",
    "failMode": "secure",
}
"""Mininet switch options every lab switch is created with (userspace OVS, OpenFlow 1.3, no standalone fallback)."""


def host_address(octet: int) -> tuple[str, str]:
    """The (ip, mac) of the lab host whose last address byte is ``octet``; the MAC spells the octet in decimal."""
    if not 1 <= octet <= LAST_HOST:
        raise ValueError(f"host octet {octet} is outside 1..{LAST_HOST}")
    return f"{PREFIX}{octet}", f"00:00:00:00:00:{octet:02d}"


class LabTopo(Topo):
    """A Topo whose every port, address and dpid is explicit, so it can emit its static fabric config without root."""

    def __init__(self, clients: int = 3, backends: int = 3, mgmt: bool = False, trunk_mtu: int | None = None,
                 routers: int = 0) -> None:
        """Check the host counts and build the topology (plus the management network when ``mgmt``).

        ``routers`` request-router hosts r1.. (10.0.0.91..) are placed by the topology (FabricTopo: on the client
        edge) and, with ``mgmt``, join the management network like the backends.

        ``trunk_mtu`` sets the MTU of both ends of every switch-to-switch link (tunnel mode's MPLS label needs 1504:
        the userspace datapath never fragments, and host links only ever see the popped, unlabelled packets).
        """
        if not 1 <= clients <= FIRST_BACKEND - FIRST_CLIENT:
            raise ValueError(f"clients must be 1..{FIRST_BACKEND - FIRST_CLIENT}, got {clients}")
        if not 1 <= backends <= LAST_HOST - FIRST_BACKEND + 1:
            raise ValueError(f"backends must be 1..{LAST_HOST - FIRST_BACKEND + 1}, got {backends}")
        if not 0 <= routers <= LAST_HOST - FIRST_ROUTER + 1 or (routers and FIRST_BACKEND + backends > FIRST_ROUTER):
            raise ValueError(f"routers must be 0..{LAST_HOST - FIRST_ROUTER + 1}, with at most "
                             f"{FIRST_ROUTER - FIRST_BACKEND} backends, got {routers} routers and {backends} backends")
        self.routers: list[str] = [f"r{i}" for i in range(1, routers + 1)]
        self.clients: list[str] = [f"c{i}" for i in range(1, clients + 1)]
        self.backends: list[str] = [f"h{i}" for i in range(1, backends + 1)]
        self._dpids: dict[str, int] = {}
        self._attach: dict[str, tuple[str, int]] = {}
        self.mgmt = mgmt
        self.trunk_mtu = trunk_mtu
        super().__init__()
        if mgmt:
            self._add_mgmt_network()

    def _add_mgmt_network(self) -> None:
        """A management switch m0 (plain L2 bridge, no controller) joining the root namespace and the eth1 of every
        backend and router.

        Agents reach the controller over it, never over the data path. The root namespace side is ``mgmt0-eth0``
        with 10.99.0.254/24; backend hN gets 10.99.0.<its data octet>.
        """
        self.addSwitch(MGMT_SWITCH, cls=OVSBridge, datapath="user", dpid="99")
        self.addHost(MGMT_ROOT, inNamespace=False, ip=f"{MGMT_PREFIX}{MGMT_ROOT_OCTET}/24")
        self.addLink(MGMT_ROOT, MGMT_SWITCH, port1=0, port2=1)
        for index, name in enumerate(self.backends + self.routers):
            octet = int(self.host_ip(name).rsplit(".", 1)[1])
            self.addLink(name, MGMT_SWITCH, port1=1, port2=index + 2,
                         params1={"ip": f"{MGMT_PREFIX}{octet}/24"})

    def mgmt_ip(self, name: str) -> str:
        """The management-network address of a backend, or of the root namespace for ``mgmt0``."""
        if name == MGMT_ROOT:
            return f"{MGMT_PREFIX}{MGMT_ROOT_OCTET}"
        return f"{MGMT_PREFIX}{self.host_ip(name).rsplit('.', 1)[1]}"

    def data_hosts(self) -> list[str]:
        """The hosts attached to the data-path fabric (clients and backends), sorted."""
        return [name for name in self.hosts() if name in self._attach]

    def data_switches(self) -> list[str]:
        """The OpenFlow switches of the data-path fabric (not the management bridge), sorted."""
        return [name for name in self.switches() if name in self._dpids]

    def add_lab_switch(self, name: str, dpid: int) -> str:
        """Add an OVS userspace switch with an explicit dpid."""
        self._dpids[name] = dpid
        return self.addSwitch(name, dpid=f"{dpid:x}", **SWITCH_OPTS)

    def add_lab_host(self, name: str, octet: int, switch: str, port: int) -> str:
        """Add a host with explicit IP and MAC on ``switch`` port ``port`` (the host side is always eth0)."""
        ip, mac = host_address(octet)
        self.addHost(name, ip=f"{ip}/{PREFIX_LEN}", mac=mac, defaultRoute=f"dev {name}-eth0")
        self.addLink(name, switch, port1=0, port2=port)
        self._attach[name] = (switch, port)
        return name

    def add_trunk(self, a: str, a_port: int, b: str, b_port: int) -> None:
        """Add a switch-to-switch link with explicit ports on both ends (with ``trunk_mtu`` on both when set)."""
        mtu = {"ifconfig": f"mtu {self.trunk_mtu}"} if self.trunk_mtu else {}
        self.addLink(a, b, port1=a_port, port2=b_port, **mtu)

    def host_ip(self, name: str) -> str:
        """The IPv4 address of host ``name`` (without prefix length)."""
        return str(self.nodeInfo(name)["ip"]).split("/")[0]

    def host_mac(self, name: str) -> str:
        """The MAC address of host ``name``."""
        return str(self.nodeInfo(name)["mac"])

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
            hosts.append({"name": name, "ip": self.host_ip(name), "mac": self.host_mac(name), "switch": switch,
                          "port": port})
        return {"switches": switches, "links": links, "hosts": hosts}


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
