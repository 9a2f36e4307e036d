"""IPv6 VIP services traced through the fake fabric: neighbour discovery, controller dispatch (nat), switch dispatch
with learn and conntrack pinning, client_ip sessions with an IPv6 prefix and controller probes, beside an IPv4 VIP
(dual stack)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from nlb_sdn.config import Config, vip_mac
from nlb_sdn.core import frames
from nlb_sdn.flows.pipeline import Table, check_message
from tests.fakeof.fabric import CoreNet
from tests.fakeof.switch import TCP_ACK, TCP_SYN, packet_from_bytes, tcp6_packet
from tests.lib.configs import topo_config
from topologies import FabricTopo

VIP6 = "fd00::100"
VIP4 = "10.0.0.100"
MEMBER_PORT = 8080
BACKENDS = ("h1", "h2", "h3")
WEIGHTS = (40, 35, 25)
CLIENT_EDGE = 1


def make_config(dispatch: str = "controller", pinning: str | None = None, **vip_fields: Any) -> Config:
    """Dual-stack FabricTopo: IPv6 VIP web6 (fd00::100:80 -> h1..h3 fd00::1x:8080, weights 40/35/25) and IPv4 VIP
    web (10.0.0.100:80)."""
    topo = FabricTopo(ipv6=True)
    members6 = [
        {"name": name, "address": topo.host_ipv6(name), "port": MEMBER_PORT, "weight": weight}
        for name, weight in zip(BACKENDS, WEIGHTS, strict=True)
    ]
    web6 = {"name": "web6", "address": VIP6, "port": 80, "dispatch": dispatch, "members": members6, **vip_fields}
    if pinning:
        web6["switch_pinning"] = pinning
    web4 = {"name": "web", "address": VIP4, "port": 80, "members": topo.members(port=MEMBER_PORT)}
    return topo_config(topo, [web6, web4])


class Net6(CoreNet):
    """The core and the fake fabric, with IPv6 host and segment shortcuts."""

    def ip6(self, host: str) -> str:
        """A host's IPv6 address."""
        address = self.fab.hosts[host].ipv6
        assert address is not None
        return address

    def to_vip6(self, client: str, sport: int, flags: int = TCP_SYN) -> dict[str, Any]:
        """A segment from ``client`` to the IPv6 VIP (sent to the VIP's MAC, as after neighbour discovery)."""
        return tcp6_packet(self.mac(client), vip_mac(VIP6), self.ip6(client), VIP6, sport, 80, flags)

    def send6(self, client: str, sport: int, flags: int = TCP_SYN, now: float = 1.0) -> Any:
        """Send a segment to the IPv6 VIP, the controller answering its packet-ins; what reached the hosts."""
        self.fab.clock(now)
        first, after = self.fab.run(self.lb, client, self.to_vip6(client, sport, flags), now)
        first.extend(after)
        return first

    def reply(self, member: str, client: str, sport: int) -> Any:
        """The member's SYN-ACK to the client, through the fabric."""
        pkt = tcp6_packet(
            self.mac(member), self.mac(client), self.ip6(member), self.ip6(client), MEMBER_PORT, sport, TCP_SYN | 0x10
        )
        return self.fab.inject(member, pkt)


def assert_reached_member(pkt: dict[str, Any], net: Net6, member: str) -> None:
    """The packet was rewritten to the member: its IPv6 address, port and MAC."""
    assert (pkt["ipv6_dst"], pkt["tcp_dst"], pkt["eth_dst"]) == (net.ip6(member), MEMBER_PORT, net.mac(member))


def assert_from_vip(delivery: Any, client: str) -> None:
    """The reply reached the client rewritten back to the VIP, without the controller."""
    [(host, got)] = delivery.delivered
    assert host == client and (got["eth_src"], got["ipv6_src"], got["tcp_src"]) == (vip_mac(VIP6), VIP6, 80)
    assert not delivery.packet_ins


def test_neighbor_solicitations_for_vips_and_hosts_are_answered_by_the_controller() -> None:
    net = Net6(make_config())
    for target, mac in ((VIP6, vip_mac(VIP6)), (net.ip6("h1"), net.mac("h1"))):
        frame = frames.neighbor_solicit_frame(net.mac("c1"), net.ip6("c1"), target)
        delivery, answered = net.fab.run(net.lb, "c1", packet_from_bytes(frame), 1.0)
        [(dpid, punted)] = delivery.packet_ins
        assert (dpid, punted.table_id) == (CLIENT_EDGE, Table.CLASSIFY)
        [(host, advert)] = answered.delivered
        assert host == "c1" and advert["icmpv6_type"] == frames.ICMPV6_NEIGHBOR_ADVERT and advert["eth_src"] == mac
        assert advert["ipv6_src"] == target and advert["ipv6_dst"] == net.ip6("c1")
    unknown = frames.neighbor_solicit_frame(net.mac("c1"), net.ip6("c1"), "fd00::99")
    _, answered = net.fab.run(net.lb, "c1", packet_from_bytes(unknown), 1.0)
    assert answered.nothing and net.lb.stats()["dropped"]["ndp_unknown_target"] == 1
    assert net.lb.stats()["packet_in"]["ndp"] == 2


def test_the_advertisement_is_a_valid_icmpv6_packet() -> None:
    frame = frames.neighbor_advert_frame("02:4f:00:00:01:00", VIP6, "00:00:00:00:00:01", "fd00::1")
    ipv6 = frame[frames.ETH_HEADER.size :]
    payload_len, hop_limit = int.from_bytes(ipv6[4:6], "big"), ipv6[7]
    body = ipv6[40 : 40 + payload_len]
    pseudo = frames.IPV6_PSEUDO_HEADER.pack(ipv6[8:24], ipv6[24:40], payload_len, frames.IPPROTO_ICMPV6)
    assert hop_limit == 255 and body[0] == frames.ICMPV6_NEIGHBOR_ADVERT
    assert frames.internet_checksum(pseudo + body) == 0
    assert body[24:32] == bytes([2, 1]) + bytes.fromhex("024f00000100")  # target link-layer address option


def test_controller_dispatch_plumbs_ipv6_connections_both_ways() -> None:
    net = Net6(make_config())
    delivery = net.send6("c1", 42000)
    [(member, pkt)] = delivery.delivered
    assert_reached_member(pkt, net, member)
    [forward] = net.fab.connection_flows(CLIENT_EDGE, Table.CONNECTIONS)
    assert (forward.match["ipv6_src"], forward.match["ipv6_dst"], forward.match["tcp_src"]) == (
        net.ip6("c1"),
        VIP6,
        42000,
    )
    ack = net.send6("c1", 42000, TCP_ACK)
    assert ack.hosts == [member] and not ack.packet_ins, "later segments ride the connection entry"
    assert_from_vip(net.reply(member, "c1", 42000), "c1")
    [row] = [r for r in net.lb.connections() if r["vip"] == "web6"]
    assert row["member"] == member
    assert net.lb.stats()["dropped"] == {}


def test_controller_dispatch_follows_weights_beside_an_ipv4_vip() -> None:
    net = Net6(make_config())
    hosts = Counter(net.send6(f"c{1 + sport % 3}", sport).hosts[0] for sport in range(40000, 40200))
    assert {host: hosts[host] for host in BACKENDS} == {"h1": 80, "h2": 70, "h3": 50}
    four = net.fab.run(net.lb, "c1", net.to_vip("c1", 45000, vip=VIP4), 1.0)[1]
    [(member, pkt)] = four.delivered
    assert (pkt["ipv4_dst"], pkt["tcp_dst"]) == (net.ip(member), MEMBER_PORT)


def test_session_flows_pin_an_ipv6_client_prefix() -> None:
    net = Net6(make_config(affinity="client_ip", affinity_prefix=120, granularity="session"))
    [first] = net.send6("c1", 42000).hosts
    assert net.send6("c2", 42001).hosts == [first], "c1 and c2 share fd00::/120"
    [session] = net.lb.ctx.affinity.sessions.select("web6", None)
    assert (session.client, session.member) == ("fd00::/120", first)
    entries = [e for e in net.fab.dps[CLIENT_EDGE].switch.dump_flows(Table.CONNECTIONS) if e.cookie >> 56 == 0x04]
    assert [e.match["ipv6_src"] for e in entries] == [("fd00::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff00")]


@pytest.mark.parametrize("pinning", ["learn", "conntrack"])
def test_switch_dispatch_of_an_ipv6_vip_follows_weights_and_pins(pinning: str) -> None:
    net = Net6(make_config(dispatch="switch", pinning=pinning))
    hosts: Counter[str] = Counter()
    for sport in range(40000, 41000):
        delivery = net.fab.inject("c1", net.to_vip6("c1", sport))
        [(member, pkt)] = delivery.delivered
        assert_reached_member(pkt, net, member)
        hosts[member] += 1
        for dpid, packet_in in delivery.packet_ins:  # conntrack: the SYN's copy tells the controller
            msg = packet_in.to_msg(net.fab.dps[dpid])
            net.lb.handle_packet_in(dpid, msg.match["in_port"], msg.data, msg.total_len, msg.table_id, 1.0, msg.cookie)
    for host, weight in zip(BACKENDS, WEIGHTS, strict=True):
        assert abs(hosts[host] / 1000 - weight / 100) < 0.05, hosts
    [(member, _)] = net.fab.inject("c1", net.to_vip6("c1", 42000)).delivered
    ack = net.fab.inject("c1", net.to_vip6("c1", 42000, TCP_ACK))
    assert ack.hosts == [member] and not ack.packet_ins
    assert_from_vip(net.reply(member, "c1", 42000), "c1")
    if pinning == "conntrack":
        assert {r["vip"] for r in net.lb.connections()} == {"web6"} and len(net.lb.connections()) == 1000


def test_every_ipv6_flow_keeps_to_the_pipeline_declaration() -> None:
    for dispatch, pinning in (("controller", None), ("switch", "learn"), ("switch", "conntrack")):
        net = Net6(make_config(dispatch=dispatch, pinning=pinning))
        for dpid in net.fab.dps:
            assert [v for msg in net.lb.switch_flows(dpid) for v in check_message(msg)] == []


def test_an_ipv6_vip_added_at_run_time_makes_an_ipv4_fabric_dual_stack() -> None:
    topo = FabricTopo()
    web4 = {"name": "web", "address": VIP4, "port": 80, "members": topo.members(port=MEMBER_PORT)}
    net = Net6(topo_config(topo, [web4]))
    solicit = packet_from_bytes(frames.neighbor_solicit_frame(net.mac("c1"), "fd00::1", VIP6))
    assert net.fab.inject("c1", solicit).nothing, "an IPv4-only fabric takes no IPv6"
    member = {"name": "h1", "address": "fd00::11", "port": MEMBER_PORT, "mac": net.mac("h1")}
    web6 = {"name": "web6", "address": VIP6, "port": 80, "members": [member]}
    net.fab.send_all(net.lb.apply_config(topo_config(topo, [web4, web6]), net.fab.dps, 1.0))
    _, answered = net.fab.run(net.lb, "c1", solicit, 1.0)
    [(host, advert)] = answered.delivered
    assert host == "c1" and advert["eth_src"] == vip_mac(VIP6)
    syn = tcp6_packet(net.mac("c1"), vip_mac(VIP6), "fd00::1", VIP6, 42000, 80)
    [(host, pkt)] = net.fab.run(net.lb, "c1", syn, 1.0)[1].delivered
    assert host == "h1" and (pkt["ipv6_dst"], pkt["tcp_dst"]) == ("fd00::11", MEMBER_PORT)


def test_controller_probes_reach_ipv6_members_and_their_replies_count() -> None:
    topo = FabricTopo(ipv6=True)
    member = {"name": "h1", "address": topo.host_ipv6("h1"), "port": MEMBER_PORT, "health": "probe"}
    net = Net6(topo_config(topo, [{"name": "web6", "address": VIP6, "port": 80, "members": [member]}]))
    _, sent = net.lb.tick(now=10.0, dpids=list(net.fab.dps))
    probes = [pkt for delivery in (net.fab.send(d, m) for d, m in sent.items()) for pkt in delivery.to("h1")]
    [probe] = probes
    assert (probe["ipv6_src"], probe["ipv6_dst"], probe["tcp_dst"], probe["tcp_flags"]) == (
        VIP6,
        net.ip6("h1"),
        MEMBER_PORT,
        TCP_SYN,
    )
    outstanding = net.lb.health.prober.states[("web6", "h1")].outstanding
    assert outstanding is not None
    answer = tcp6_packet(
        net.mac("h1"),
        vip_mac(VIP6),
        net.ip6("h1"),
        VIP6,
        MEMBER_PORT,
        probe["tcp_src"],
        TCP_SYN | TCP_ACK,
        tcp_ack=(outstanding.isn + 1) % 2**32,
    )
    [(dpid, punted)] = net.fab.inject("h1", answer).packet_ins
    assert punted.table_id == Table.CLASSIFY
    msg = punted.to_msg(net.fab.dps[dpid])
    net.lb.handle_packet_in(dpid, msg.match["in_port"], msg.data, msg.total_len, msg.table_id, 10.1, msg.cookie)
    assert net.lb.stats()["dropped"] == {}
    assert net.lb.health.prober.states[("web6", "h1")].outstanding is None, "the reply answered the probe"
