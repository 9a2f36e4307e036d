"""Lab fabric with an uplink: a Linux router on a gateway port, and a client network behind it (``fabric.gateways``)."""

from __future__ import annotations

from typing import Any

from topologies.base import FIRST_BACKEND, FIRST_CLIENT, LabTopo

ROUTER = "gw1"
"""The router host: eth0 on the uplink port s1:2, eth1 toward the client network."""
UPLINK_SWITCH = "s1"
UPLINK_PORT = 2
ROUTER_IP = "172.16.0.2"
ROUTER_MAC = "00:00:00:00:fe:02"
GATEWAY_NAME = "uplink"
GATEWAY_IP = "172.16.0.1"
"""The fabric-side gateway address: the router's next hop toward the fabric (the controller answers ARP for it)."""
GATEWAY_MAC = "02:00:00:00:fe:01"
TRANSFER_LEN = 30
CLIENT_NET = "192.168.99.0/24"
CLIENT_NET_ROUTER_IP = "192.168.99.1"
ROUTER_CLIENT_MAC = "00:00:00:00:fe:99"
REMOTE_CLIENT = "x1"
"""The client behind the router: not a fabric host, reached only through the gateway's prefix."""
REMOTE_CLIENT_IP = "192.168.99.10"
REMOTE_CLIENT_MAC = "00:00:00:00:99:10"
HOST_BASE_PORT = 3


class GatewayTopo(LabTopo):
    """Edge s1 (uplink and local clients) linked to edge s2 (backends); router gw1 on the uplink s1:2 and remote
    client x1 behind it (linked to the router's eth1), reached only through the gateway's prefix.

    ``sX:p`` is OpenFlow port p of switch sX::

        x1 192.168.99.10 --- eth1 gw1 eth0 172.16.0.2/30 --- s1:2   (gateway uplink: 192.168.99.0/24,
                        192.168.99.1                                 fabric-side address 172.16.0.1)
        c1 10.0.0.1 --- s1:3    s1:1 --- s2:1    s2:3 --- h1 10.0.0.11
                                                 s2:4 --- h2 10.0.0.12
                                                 s2:5 --- h3 10.0.0.13

    The router forwards (``ip_forward=1``) and routes 10.0.0.0/24 via 172.16.0.1 (``router_commands``); backends
    keep their on-link default route and so ask ARP for remote clients, which the controller answers with the
    gateway's fabric-side MAC.
    """

    def build(self) -> None:
        """Add the two edges, their link, the local hosts, the router on the uplink and the remote client."""
        self.add_lab_switch("s1", 1)
        self.add_lab_switch("s2", 2)
        self.add_trunk("s1", 1, "s2", 1)
        for index, name in enumerate(self.clients):
            self.add_lab_host(name, FIRST_CLIENT + index, "s1", HOST_BASE_PORT + index)
        for index, name in enumerate(self.backends):
            self.add_lab_host(name, FIRST_BACKEND + index, "s2", HOST_BASE_PORT + index)
        self._hosts[ROUTER] = {"ip": f"{ROUTER_IP}/{TRANSFER_LEN}", "mac": ROUTER_MAC}
        self._add_link(ROUTER, 0, UPLINK_SWITCH, UPLINK_PORT)
        self._hosts[REMOTE_CLIENT] = {
            "ip": f"{REMOTE_CLIENT_IP}/24",
            "mac": REMOTE_CLIENT_MAC,
            "defaultRoute": f"via {CLIENT_NET_ROUTER_IP}",
        }
        self._add_link(
            ROUTER, 1, REMOTE_CLIENT, 0, addr1=ROUTER_CLIENT_MAC, params1={"ip": f"{CLIENT_NET_ROUTER_IP}/24"}
        )

    def gateway_config(self) -> dict[str, Any]:
        """The ``fabric.gateways`` entry of the uplink."""
        return {
            "name": GATEWAY_NAME,
            "switch": UPLINK_SWITCH,
            "port": UPLINK_PORT,
            "router_ip": ROUTER_IP,
            "router_mac": ROUTER_MAC,
            "prefixes": [CLIENT_NET],
            "address": GATEWAY_IP,
            "mac": GATEWAY_MAC,
        }

    def fabric_config(self) -> dict[str, Any]:
        """The fabric section with the uplink's gateway (the router and remote clients are not hosts of it)."""
        return {**super().fabric_config(), "gateways": [self.gateway_config()]}

    @staticmethod
    def router_commands() -> list[str]:
        """Shell commands that make ``gw1`` a router between the client network and the fabric."""
        return [
            "sysctl -qw net.ipv4.ip_forward=1",
            f"ip route replace 10.0.0.0/24 via {GATEWAY_IP} dev {ROUTER}-eth0",
        ]
