"""Level-2 tests of gateway uplinks on the fake fabric: a client behind a router (not a fabric host) reaches VIPs
through the uplink port, and members' replies leave by the uplink toward the router's MAC (docs/fabric.md, "Gateways").
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from nlb_sdn.config import Config, vip_mac
from nlb_sdn.flows.pipeline import Priority, Table
from tests.fakeof.fabric import CoreNet, Delivery
from tests.fakeof.switch import TCP_ACK, TCP_SYN, arp_packet, tcp_packet
from tests.lib.configs import topo_config
from topologies.gateway import (
    GATEWAY_IP,
    GATEWAY_MAC,
    GATEWAY_NAME,
    REMOTE_CLIENT_IP,
    ROUTER_IP,
    ROUTER_MAC,
    UPLINK_PORT,
    GatewayTopo,
)

WEB = "10.0.0.100"
SWITCHED = "10.0.0.101"
WEIGHTS = {"h1": 40, "h2": 35, "h3": 25}
UPLINK_DPID = 1
ARP_REQUEST = 1


def gateway_config() -> Config:
    """VIP web (controller dispatch) and VIP switched (switch dispatch), both weighted 40/35/25, on GatewayTopo."""
    topo = GatewayTopo(clients=1)
    members = [member | {"weight": WEIGHTS[member["name"]]} for member in topo.members()]
    vips = [
        {"name": "web", "address": WEB, "port": 80, "members": members},
        {"name": "switched", "address": SWITCHED, "port": 80, "dispatch": "switch", "members": members},
    ]
    return topo_config(topo, vips)


class GatewayNet(CoreNet):
    """The core and the fake fabric, with the router on the uplink as the sender of remote clients' packets."""

    def from_router(self, vip: str, sport: int, flags: int = TCP_SYN) -> dict[str, Any]:
        """A remote client's segment to ``vip`` as the router forwards it: to the gateway's fabric-side MAC."""
        return tcp_packet(ROUTER_MAC, GATEWAY_MAC, REMOTE_CLIENT_IP, vip, sport, 80, flags)

    def reply(self, member: str, sport: int) -> Delivery:
        """A member's SYN-ACK to the remote client, sent to the MAC the controller answered its ARP with."""
        pkt = tcp_packet(self.mac(member), GATEWAY_MAC, self.ip(member), REMOTE_CLIENT_IP, 80, sport, TCP_SYN | TCP_ACK)
        return self.fab.inject(member, pkt)

    def arp(self, sender: str, sender_ip: str, sender_mac: str, target: str) -> Delivery:
        """An ARP request from ``sender`` (a host, or the gateway's router) and what the controller answered."""
        request = arp_packet(ARP_REQUEST, sender_mac, sender_ip, target)
        first = self.fab.inject(sender, request)
        return self.fab.to_controller(self.lb, first, 0.0)


@pytest.fixture
def net() -> GatewayNet:
    return GatewayNet(gateway_config())


def answered_mac(delivery: Delivery, to: str) -> str | None:
    """The MAC an ARP reply delivered to ``to`` gives, if one was."""
    replies = delivery.to(to)
    return replies[0]["arp_sha"] if replies else None


def test_the_controller_answers_arp_for_the_gateway_side_like_a_router_interface(net: GatewayNet) -> None:
    router = (GATEWAY_NAME, ROUTER_IP, ROUTER_MAC)
    assert answered_mac(net.arp(*router, GATEWAY_IP), GATEWAY_NAME) == GATEWAY_MAC
    assert answered_mac(net.arp(*router, WEB), GATEWAY_NAME) == vip_mac(WEB)
    assert answered_mac(net.arp(*router, net.ip("h1")), GATEWAY_NAME) == net.mac("h1")
    assert answered_mac(net.arp(*router, "192.168.99.77"), GATEWAY_NAME) is None, "its own side: no answer"
    member = ("h2", net.ip("h2"), net.mac("h2"))
    assert answered_mac(net.arp(*member, REMOTE_CLIENT_IP), "h2") == GATEWAY_MAC, "proxy ARP for a prefix"
    assert answered_mac(net.arp(*member, ROUTER_IP), "h2") == ROUTER_MAC
    assert answered_mac(net.arp(*member, "172.31.0.9"), "h2") is None, "in no prefix"


def test_a_remote_client_reaches_a_member_and_the_reply_leaves_by_the_uplink(net: GatewayNet) -> None:
    first, after = net.fab.run(net.lb, GATEWAY_NAME, net.from_router(WEB, 40000), 0.0)
    assert len(first.packet_ins) == 1 and not first.delivered
    [(member, pkt)] = after.delivered
    assert (pkt["ipv4_dst"], pkt["eth_dst"], pkt["ipv4_src"]) == (net.ip(member), net.mac(member), REMOTE_CLIENT_IP)
    back = net.reply(member, 40000)
    [(to, got)] = back.delivered
    assert to == GATEWAY_NAME and not back.packet_ins and not back.stray
    assert (got["eth_dst"], got["eth_src"]) == (ROUTER_MAC, GATEWAY_MAC), "routed to the router's MAC"
    assert (got["ipv4_src"], got["tcp_src"], got["ipv4_dst"], got["tcp_dst"]) == (WEB, 80, REMOTE_CLIENT_IP, 40000)
    assert back.hops[-1][0] == UPLINK_DPID
    routes = [hit.priority for _, trace in back.traces for hit in trace.hits if hit.table_id == Table.FORWARD]
    assert routes == [Priority.PREFIX_ROUTE + 24, Priority.PREFIX_ROUTE], "the prefix, then the uplink's last hop"
    assert net.fab.run(net.lb, GATEWAY_NAME, net.from_router(WEB, 40000, TCP_ACK), 0.0)[0].hosts == [member]


def test_controller_dispatch_of_remote_clients_follows_the_weights(net: GatewayNet) -> None:
    served: Counter[str] = Counter()
    for sport in range(40000, 40100):
        _first, after = net.fab.run(net.lb, GATEWAY_NAME, net.from_router(WEB, sport), 0.0)
        served[after.hosts[0]] += 1
    assert dict(served) == WEIGHTS


def test_switch_dispatch_of_remote_clients_follows_the_weights_and_replies_go_back_out(net: GatewayNet) -> None:
    served: Counter[str] = Counter()
    for sport in range(40000, 41000):
        delivery = net.fab.inject(GATEWAY_NAME, net.from_router(SWITCHED, sport))
        assert not delivery.stray  # the controller gets copies only (conntrack pinning), never the SYN itself
        [member] = delivery.hosts
        served[member] += 1
    for name, weight in WEIGHTS.items():
        assert abs(served[name] / 10 - weight) <= 5, served
    [member] = net.fab.inject(GATEWAY_NAME, net.from_router(SWITCHED, 41501)).hosts
    back = net.reply(member, 41501)
    [(to, got)] = back.delivered
    assert to == GATEWAY_NAME and (got["eth_dst"], got["eth_src"]) == (ROUTER_MAC, GATEWAY_MAC)
    assert (got["ipv4_src"], got["tcp_src"]) == (SWITCHED, 80)


def test_a_gateway_port_going_down_withdraws_its_routes_and_coming_back_restores_them(net: GatewayNet) -> None:
    edge = net.fab.dps[UPLINK_DPID]
    routes = [e for e in edge.switch.dump_flows(Table.FORWARD) if e.priority > Priority.FORWARD]
    assert len(routes) == 1 + 4 + 1  # the prefix, the four fabric hosts' own addresses, the uplink's last hop
    net.fab.send_all(dict(net.lb.port_status(UPLINK_DPID, UPLINK_PORT, False, 1.0).messages))
    left = {e.priority for e in edge.switch.dump_flows(Table.FORWARD) if e.priority > Priority.FORWARD}
    assert left == {Priority.PREFIX_ROUTE + 33}, "only the hosts' own addresses are left"
    net.fab.send_all(dict(net.lb.port_status(UPLINK_DPID, UPLINK_PORT, True, 2.0).messages))
    assert len([e for e in edge.switch.dump_flows(Table.FORWARD) if e.priority > Priority.FORWARD]) == 6


def test_a_reconnecting_uplink_switch_keeps_its_routes_through_the_audit(net: GatewayNet) -> None:
    stats = [(e.table_id, e.priority, e.match, e.cookie) for e in net.fab.dps[UPLINK_DPID].switch.dump_flows()]
    assert any(priority > Priority.FORWARD for table, priority, _match, _cookie in stats if table == Table.FORWARD)
    assert not net.lb.reconcile(UPLINK_DPID, stats, 1.0, after_connect=True), "its prefix routes are wanted"
