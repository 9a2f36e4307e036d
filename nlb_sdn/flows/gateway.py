"""Table 3 routes by prefix toward the fabric's gateways (``fabric.gateways``, docs/fabric.md "Gateways").

A member (or anything in the fabric) sends a packet for a client behind a router to a gateway's fabric-side MAC: the
controller answers ARP with it for the gateway's address and for the addresses of its prefixes. Table 3 then routes
it as a router interface would: the longest prefix holding its destination picks the gateway, whose router's MAC
becomes the destination (the fabric-side MAC the source), and the packet leaves toward that router's uplink. A
fabric host's own address sent there goes to the host instead (a /32 beats every prefix).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from nlb_sdn.config import Fabric
from nlb_sdn.flows.builders import apply, flow_add, flow_delete_strict
from nlb_sdn.flows.pipeline import CookieKind, Priority, Table, make_cookie
from nlb_sdn.framework import ofproto_v1_3_parser as parser

ETH_TYPE_IP = 0x0800
HOST_ROUTE_LENGTH = 33
"""A fabric host's own address ranks above every prefix (/0 to /32): ``PREFIX_ROUTE`` + 33."""


@dataclass(frozen=True, slots=True, order=True)
class PrefixRoute:
    """One table 3 route: packets to ``via_mac`` (a gateway's fabric-side MAC, or on the gateway's switch its router's
    MAC) for ``prefix`` leave by ``port``, rewritten from ``source_mac`` to ``next_mac`` (a router's MAC, or a fabric
    host's for a host's address)."""

    via_mac: str
    prefix: str
    rank: int
    """The prefix length, or ``HOST_ROUTE_LENGTH`` for a fabric host's own address."""
    source_mac: str
    next_mac: str
    port: int


def prefix_routes(fabric: Fabric, switch: str, mac_ports: dict[str, int]) -> list[PrefixRoute]:
    """One switch's prefix routes (``mac_ports``: its table 3 ports toward each MAC); none without a live path.

    On a gateway's own switch, IPv4 packets leaving by its live uplink also take the fabric-side MAC as source (the
    last hop may be another switch's prefix route, or a connection's reverse entry that wrote the VIP's MAC).
    """
    routes = [
        PrefixRoute(gateway.router_mac, "0.0.0.0/0", 0, gateway.mac, gateway.router_mac, gateway.port)
        for gateway in fabric.gateways
        if gateway.switch == switch and mac_ports.get(gateway.router_mac) == gateway.port
    ]
    for via in fabric.gateways:
        for gateway in fabric.gateways:
            port = mac_ports.get(gateway.router_mac)
            if port is None:
                continue
            routes += [
                PrefixRoute(via.mac, str(network), network.prefixlen, via.mac, gateway.router_mac, port)
                for network in gateway.networks()
            ]
        routes += [
            PrefixRoute(via.mac, f"{host.ip}/32", HOST_ROUTE_LENGTH, via.mac, host.mac, mac_ports[host.mac])
            for host in fabric.hosts
            if host.mac in mac_ports
        ]
    return sorted(routes)


def _match(route: PrefixRoute) -> Any:
    """IPv4 packets to ``via_mac`` whose destination is in the route's prefix (a /0 leaves the address out)."""
    network = ipaddress.IPv4Network(route.prefix)
    if not network.prefixlen:
        return parser.OFPMatch(eth_dst=route.via_mac, eth_type=ETH_TYPE_IP)
    return parser.OFPMatch(
        eth_dst=route.via_mac,
        eth_type=ETH_TYPE_IP,
        ipv4_dst=(str(network.network_address), str(network.netmask)),
    )


def _priority(route: PrefixRoute) -> int:
    """Longer prefixes rank higher; a host's own address above all."""
    return Priority.PREFIX_ROUTE + route.rank


def route_flows(lbu_id: int, routes: list[PrefixRoute]) -> list[Any]:
    """Table 3 entries of ``routes``: rewrite the Ethernet addresses to the next hop, out of its port."""
    cookie = make_cookie(CookieKind.FABRIC, lbu_id)
    return [
        flow_add(
            Table.FORWARD,
            _priority(route),
            _match(route),
            [
                apply(
                    parser.OFPActionSetField(eth_src=route.source_mac),
                    parser.OFPActionSetField(eth_dst=route.next_mac),
                    parser.OFPActionOutput(route.port),
                )
            ],
            cookie,
        )
        for route in routes
    ]


def route_changes(lbu_id: int, old: list[PrefixRoute], new: list[PrefixRoute]) -> list[Any]:
    """The deletes of routes whose match is gone, then the adds of new or changed routes (an add replaces in place)."""
    kept = {(route.via_mac, route.prefix, route.rank) for route in new}
    gone = [route for route in old if (route.via_mac, route.prefix, route.rank) not in kept]
    msgs = [flow_delete_strict(Table.FORWARD, _priority(route), _match(route)) for route in gone]
    return msgs + route_flows(lbu_id, sorted(set(new) - set(old)))
