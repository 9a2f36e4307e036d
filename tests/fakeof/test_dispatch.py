"""Level-2 tests of switch-resident dispatch (``dispatch: switch``) on the four-switch fake fabric.

The switches pick members with the VIP's select group and pin connections with learned entries
(``switch_pinning: learn``) or the connection tracker (``conntrack``); the controller is never on the path of a
connection and hears of it through flow stats and flow-removed (learn) or copies of SYNs and FINs (conntrack).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from nlb_sdn.config import Config, endpoint_id, parse_config, vip_mac
from nlb_sdn.flows.dispatch import SLOTS
from nlb_sdn.flows.pipeline import CookieKind, Priority, Table
from tests.fakeof.fabric import CoreNet
from tests.fakeof.switch import TCP_ACK, TCP_SYN, tcp_packet
from tests.lib.configs import topo_config
from topologies import FabricTopo, lab_config

VIP = "10.0.0.100"
VIP_MAC = vip_mac(VIP)
MEMBER_PORT = 8080
CLIENT_EDGE = 1
BACKENDS = ("h1", "h2", "h3")


def make_config(
    weights: tuple[int, ...] = (40, 35, 25),
    affinity: str = "none",
    dispatch: str = "switch",
    members: tuple[str, ...] = BACKENDS,
    states: dict[str, str] | None = None,
    pinning: str = "learn",
    max_connections: int | None = None,
    tracking: str | None = None,
) -> Config:
    """VIP web (10.0.0.100:80 -> h1..h3:8080) dispatched by the switches, on FabricTopo."""
    topo = FabricTopo()
    states = states or {}
    vip = {
        "name": "web",
        "address": VIP,
        "port": 80,
        "dispatch": dispatch,
        "affinity": affinity,
        "affinity_prefix": 24,
        "switch_pinning": pinning,
        "members": [
            {
                "name": name,
                "address": topo.host_ip(name),
                "port": MEMBER_PORT,
                "weight": weight,
                "state": states.get(name, "active"),
            }
            for name, weight in zip(BACKENDS, weights, strict=True)
            if name in members
        ],
    }
    if tracking is not None:
        vip["switch_tracking"] = tracking
    limit = {} if max_connections is None else {"max_connections": max_connections}
    return topo_config(topo, [vip], **limit)


class Net(CoreNet):
    """The core and the fake fabric it drives."""

    def syn(self, client: str, sport: int, flags: int = TCP_SYN) -> Any:
        """Send a segment from ``client`` to the VIP through the fabric."""
        return self.fab.inject(client, self.to_vip(client, sport, flags))

    def apply(self, config: Config, now: float = 1.0) -> None:
        """A config change, sent to every switch."""
        self.fab.send_all(self.lb.apply_config(config, self.fab.dps, now))


@pytest.fixture
def net() -> Net:
    return Net(make_config())


def test_the_switch_picks_the_member_and_the_controller_sees_nothing(net: Net) -> None:
    hosts = Counter()
    for sport in range(40000, 41000):
        delivery = net.syn("c1", sport)
        assert not delivery.packet_ins and not delivery.stray
        [(host, pkt)] = delivery.delivered
        assert (pkt["ipv4_dst"], pkt["tcp_dst"], pkt["eth_dst"]) == (net.ip(host), MEMBER_PORT, net.mac(host))
        hosts[host] += 1
    shares = {host: hosts[host] / 1000 for host in BACKENDS}
    assert net.lb.dispatch_shares("web") == {"h1": 26, "h2": 22, "h3": 16}
    for host, weight in zip(BACKENDS, (0.40, 0.35, 0.25), strict=True):
        assert abs(shares[host] - weight) < 0.05, shares
    assert net.lb.stats()["packet_in"] == {}


def test_later_packets_and_replies_follow_the_learned_entries(net: Net) -> None:
    [(member, _)] = net.syn("c1", 42000).delivered
    edge = net.fab.dps[CLIENT_EDGE].switch
    [forward] = net.fab.connection_flows(CLIENT_EDGE, Table.SWITCH_CONNECTIONS)
    [reverse] = net.fab.connection_flows(CLIENT_EDGE, Table.SWITCH_REVERSE)
    assert forward.match["tcp_src"] == 42000 and reverse.match["tcp_dst"] == 42000
    for _ in range(3):
        assert net.syn("c1", 42000, TCP_ACK).hosts == [member]
    assert forward.n_packets == 3
    reply = tcp_packet(
        net.mac(member), net.mac("c1"), net.ip(member), net.ip("c1"), MEMBER_PORT, 42000, TCP_SYN | TCP_ACK
    )
    back = net.fab.inject(member, reply)
    [(host, got)] = back.delivered
    assert host == "c1" and (got["eth_src"], got["ipv4_src"], got["tcp_src"]) == (VIP_MAC, VIP, 80)
    assert reverse.n_packets == 1 and not back.packet_ins
    assert edge.flow_count(Table.CONNECTIONS) == 3  # SYN punt, miss, and the VIP's dispatch entry only


def test_new_weights_move_new_connections_only(net: Net) -> None:
    before = {sport: net.syn("c1", sport).hosts[0] for sport in range(40000, 40200)}
    net.apply(make_config(weights=(0, 0, 1)))
    assert net.lb.dispatch_shares("web") == {"h1": 0, "h2": 0, "h3": SLOTS}
    for sport, host in before.items():
        assert net.syn("c1", sport, TCP_ACK).hosts == [host], "an established connection moved"
    assert {net.syn("c2", sport).hosts[0] for sport in range(40000, 40050)} == {"h3"}


def test_a_draining_member_gets_no_new_connection_and_keeps_its_own(net: Net) -> None:
    pinned = {sport: net.syn("c1", sport).hosts[0] for sport in range(40000, 40100)}
    net.apply(make_config(states={"h1": "draining"}))
    updates = net.lb.dispatch_updates(2.0, net.fab.dps)
    net.fab.send_all(updates)
    assert net.lb.dispatch_shares("web")["h1"] == 0
    assert "h1" not in {net.syn("c2", sport).hosts[0] for sport in range(40000, 40200)}
    assert all(net.syn("c1", sport, TCP_ACK).hosts == [host] for sport, host in pinned.items())


def test_a_removed_member_leaves_the_group_but_its_connections_run_on(net: Net) -> None:
    pinned = {sport: net.syn("c1", sport).hosts[0] for sport in range(40000, 40100)}
    net.apply(make_config(members=("h2", "h3")))
    edge = net.fab.dps[CLIENT_EDGE].switch
    assert len(edge.dump_flows(Table.SWITCH_SELECT)) == 2 + 1
    assert "h1" not in {net.syn("c2", sport).hosts[0] for sport in range(40000, 40200)}
    assert all(net.syn("c1", sport, TCP_ACK).hosts == [host] for sport, host in pinned.items())


def test_the_controller_learns_connections_from_flow_stats_and_flow_removed(net: Net) -> None:
    members = {sport: net.syn("c1", sport).hosts[0] for sport in (40001, 40002)}
    edge = net.fab.dps[CLIENT_EDGE].switch
    assert net.lb.reconcile(CLIENT_EDGE, edge.flow_stats(), now=1.0) == []
    listed = {c["client"]: c for c in net.lb.connections()}
    assert {key: c["member"] for key, c in listed.items()} == {
        f"{net.ip('c1')}:{sport}": host for sport, host in members.items()
    }
    assert all(c["dispatch"] == "switch" for c in listed.values())
    assert [op.verb for op in net.lb.dam_ops] == ["put", "put"]
    removed = net.fab.expire(100.0)
    net.fab.flow_removed_to(net.lb, removed)
    assert net.lb.connections() == [] and not net.lb.lingering
    assert [op.verb for op in net.lb.dam_ops[2:]] == ["delete", "delete"]
    assert not net.fab.connection_flows(CLIENT_EDGE, Table.SWITCH_REVERSE)


def test_a_segment_that_misses_the_learned_entries_goes_round_once_then_drops(net: Net) -> None:
    net.syn("c1", 40001)
    net.fab.flow_removed_to(net.lb, net.fab.expire(100.0))
    late = tcp_packet(net.mac("c1"), VIP_MAC, net.ip("c1"), VIP, 40001, 80, TCP_ACK)
    first, after = net.fab.run(net.lb, "c1", late, 100.0)
    assert [pi.table_id for _, pi in first.packet_ins] == [Table.SWITCH_CONNECTIONS]
    assert not after.delivered and not net.fab.connection_flows(CLIENT_EDGE, Table.CONNECTIONS)
    counters = net.lb.stats()["switch_dispatch"]["counters"]
    assert (counters["reinjected"], counters["orphan"]) == (1, 1)


def test_a_reinjected_segment_finds_the_entry_the_switch_learned_meanwhile(net: Net) -> None:
    segment = tcp_packet(net.mac("c1"), VIP_MAC, net.ip("c1"), VIP, 40007, 80, TCP_ACK)
    punted = net.fab.inject("c1", segment)
    [(dpid, packet_in)] = punted.packet_ins
    [(member, _)] = net.syn("c1", 40007).delivered  # the SYN's learn lands before the controller answers
    msg = packet_in.to_msg(net.fab.dps[dpid])
    answer = net.lb.handle_packet_in(dpid, msg.match["in_port"], msg.data, msg.total_len, msg.table_id, 0.5)
    assert net.fab.send(dpid, answer).hosts == [member]


def test_client_ip_affinity_pins_the_whole_client_in_the_switch() -> None:
    net = Net(make_config(affinity="client_ip"))
    hosts = {net.syn("c1", sport).hosts[0] for sport in range(40000, 40050)}
    assert len(hosts) == 1
    edge = net.fab.dps[CLIENT_EDGE].switch
    [session] = [e for e in edge.dump_flows(Table.SWITCH_CONNECTIONS) if e.cookie >> 56 == CookieKind.SESSION]
    assert len(net.fab.connection_flows(CLIENT_EDGE, Table.SWITCH_CONNECTIONS)) == 1, "only the first SYN's own"
    assert session.match["ipv4_src"] == (net.ip("c1").rsplit(".", 1)[0] + ".0", "255.255.255.0")
    net.lb.reconcile(CLIENT_EDGE, edge.flow_stats(), now=1.0)
    [row] = [s.as_dict(1.0) for s in net.lb.sessions.select("web")]
    assert row["member"] == hosts.pop()


def test_dispatch_can_move_between_controller_and_switch(net: Net) -> None:
    pinned = {sport: net.syn("c1", sport).hosts[0] for sport in range(40000, 40020)}
    net.apply(make_config(dispatch="controller"))
    edge = net.fab.dps[CLIENT_EDGE].switch
    assert edge.groups == {} and len(edge.dump_flows(Table.SWITCH_SELECT)) == 1
    assert all(net.syn("c1", sport, TCP_ACK).hosts == [host] for sport, host in pinned.items())
    first, after = net.fab.run(net.lb, "c2", tcp_packet(net.mac("c2"), VIP_MAC, net.ip("c2"), VIP, 45000, 80), 2.0)
    assert len(first.packet_ins) == 1 and len(after.delivered) == 1
    net.apply(make_config())
    assert set(edge.groups) == {1} and not net.syn("c2", 45001).packet_ins


def test_removing_the_vip_removes_its_group_and_learned_connections(net: Net) -> None:
    net.syn("c1", 40000)
    config = make_config()
    net.apply(parse_config(lab_config(FabricTopo(), [], rest={"enabled": False})))
    edge = net.fab.dps[CLIENT_EDGE].switch
    assert edge.groups == {}
    assert not net.fab.connection_flows(CLIENT_EDGE, Table.SWITCH_CONNECTIONS)
    assert not net.fab.connection_flows(CLIENT_EDGE, Table.SWITCH_REVERSE)
    assert config.vips[0].dispatch == "switch"


# -- conntrack pinning -------------------------------------------------------------------------------------------------


@pytest.fixture
def ct_net() -> Net:
    return Net(make_config(pinning="conntrack"))


def copies_to_controller(net: Net, delivery: Any, now: float = 1.0) -> list[int]:
    """Feed a delivery's packet-ins (the switch's copies) to the core; their tables. The core answers nothing."""
    tables = []
    for dpid, packet_in in delivery.packet_ins:
        msg = packet_in.to_msg(net.fab.dps[dpid])
        assert (
            net.lb.handle_packet_in(dpid, msg.match["in_port"], msg.data, msg.total_len, msg.table_id, now, msg.cookie)
            == []
        )
        tables.append(msg.table_id)
    return tables


def test_conntrack_pins_without_a_flow_entry_and_the_controller_hears_of_it_from_a_copy(ct_net: Net) -> None:
    net = ct_net
    edge = net.fab.dps[CLIENT_EDGE].switch
    before = edge.flow_count()
    syn = net.syn("c1", 42000)
    [(member, pkt)] = syn.delivered
    assert (pkt["ipv4_dst"], pkt["tcp_dst"], pkt["eth_dst"]) == (net.ip(member), MEMBER_PORT, net.mac(member))
    assert copies_to_controller(net, syn) == [Table.SWITCH_SELECT]
    [row] = net.lb.connections()
    assert (row["client"], row["member"], row["dispatch"]) == (f"{net.ip('c1')}:42000", member, "switch")
    assert edge.flow_count() == before, "no OpenFlow entry per connection"
    assert net.syn("c1", 42000).hosts == [member], "a retransmitted SYN keeps its member"
    reply = tcp_packet(
        net.mac(member), net.mac("c1"), net.ip(member), net.ip("c1"), MEMBER_PORT, 42000, TCP_SYN | TCP_ACK
    )
    back = net.fab.inject(member, reply)
    [(host, got)] = back.delivered
    assert host == "c1" and (got["eth_src"], got["ipv4_src"], got["tcp_src"]) == (VIP_MAC, VIP, 80)
    assert not back.packet_ins
    for _ in range(3):
        ack = net.syn("c1", 42000, TCP_ACK)
        assert ack.hosts == [member] and not ack.packet_ins


def test_conntrack_connections_end_with_the_copy_of_a_fin_or_rst(ct_net: Net) -> None:
    net = ct_net
    hosts = {}
    for sport in (42001, 42002):
        syn = net.syn("c1", sport)
        hosts[sport] = syn.hosts[0]
        copies_to_controller(net, syn)
    fin = net.syn("c1", 42001, TCP_ACK | 0x01)
    assert fin.hosts == [hosts[42001]]
    assert copies_to_controller(net, fin) == [Table.CT_FORWARD]
    member = hosts[42002]
    rst = net.fab.inject(
        member, tcp_packet(net.mac(member), net.mac("c1"), net.ip(member), net.ip("c1"), MEMBER_PORT, 42002, 0x04)
    )
    assert rst.hosts == ["c1"] and copies_to_controller(net, rst) == [Table.CT_REVERSE]
    assert net.lb.connections() == []
    counters = net.lb.stats()["switch_dispatch"]["counters"]
    assert (counters["conntrack_started"], counters["conntrack_ended"]) == (2, 2)


def test_conntrack_weights_change_only_new_connections(ct_net: Net) -> None:
    net = ct_net
    pinned = {sport: net.syn("c1", sport).hosts[0] for sport in range(40000, 40100)}
    assert len(set(pinned.values())) == 3
    net.apply(make_config(weights=(0, 0, 1), pinning="conntrack"))
    assert all(net.syn("c1", sport, TCP_ACK).hosts == [host] for sport, host in pinned.items())
    assert {net.syn("c2", sport).hosts[0] for sport in range(40000, 40050)} == {"h3"}


def test_direct_traffic_from_a_conntrack_member_passes_untouched(ct_net: Net) -> None:
    net = ct_net
    direct = tcp_packet(net.mac("h1"), net.mac("c1"), net.ip("h1"), net.ip("c1"), MEMBER_PORT, 43000, TCP_ACK)
    [(host, got)] = net.fab.inject("h1", direct).delivered
    assert host == "c1" and (got["ipv4_src"], got["tcp_src"]) == (net.ip("h1"), MEMBER_PORT)


def test_moving_a_vip_from_learn_to_conntrack_keeps_the_learned_connections(net: Net) -> None:
    pinned = {sport: net.syn("c1", sport).hosts[0] for sport in range(40000, 40030)}
    net.apply(make_config(pinning="conntrack"))
    edge = net.fab.dps[CLIENT_EDGE].switch
    assert len(edge.dump_flows(Table.CT_FORWARD)) == 1 + 1 + 3 * 3  # miss, the VIP's SYN entry, 3 per member
    assert all(net.syn("c1", sport, TCP_ACK).hosts == [host] for sport, host in pinned.items())
    fresh = net.syn("c2", 45001)
    assert fresh.hosts and [pi.table_id for _, pi in fresh.packet_ins] == [Table.SWITCH_SELECT]


def test_a_member_removed_from_a_conntrack_pool_keeps_its_connections_until_they_end(ct_net: Net) -> None:
    net = ct_net
    syns = {sport: net.syn("c1", sport) for sport in range(40000, 40030)}
    for syn in syns.values():
        copies_to_controller(net, syn)
    on_h1 = [sport for sport, syn in syns.items() if syn.hosts == ["h1"]]
    assert on_h1
    net.apply(make_config(members=("h2", "h3"), pinning="conntrack"))
    assert net.lb.dispatch_updates(2.0, net.fab.dps) == {}, "h1 still has connections: its entries stay"
    for sport in on_h1:
        assert net.syn("c1", sport, TCP_ACK).hosts == ["h1"]
        member_reply = tcp_packet(net.mac("h1"), net.mac("c1"), net.ip("h1"), net.ip("c1"), MEMBER_PORT, sport, TCP_ACK)
        [(host, got)] = net.fab.inject("h1", member_reply).delivered
        assert host == "c1" and got["ipv4_src"] == VIP
    for sport in on_h1:
        copies_to_controller(net, net.syn("c1", sport, TCP_ACK | 0x01))
    updates = net.lb.dispatch_updates(3.0, net.fab.dps)
    net.fab.send_all(updates)
    edge = net.fab.dps[CLIENT_EDGE].switch
    assert all(len(msgs) == 4 for msgs in updates.values()), "h1's four shared entries go"
    h1 = endpoint_id(net.ip("h1"), MEMBER_PORT)
    assert not [e for e in edge.dump_flows(Table.CT_FORWARD) if e.match.get("ct_mark") == h1]


def audit_entries(net: Net) -> list[Any]:
    """The conntrack audit entries of the client edge (table 8, priority CT_AUDIT)."""
    return [e for e in net.fab.dps[CLIENT_EDGE].switch.dump_flows(Table.CT_FORWARD) if e.priority == Priority.CT_AUDIT]


def test_a_conntrack_connection_whose_end_copy_was_lost_leaves_when_its_audit_entry_idles_out(ct_net: Net) -> None:
    net = ct_net
    idle = net.lb.config.vip("web").idle_timeout
    for sport in (42010, 42011):
        copies_to_controller(net, net.syn("c1", sport), now=1.0)
    assert net.lb.conntrack_audits(1.0 + idle - 0.5) == {}, "not due before the VIP's idle timeout"
    net.fab.clock(1.0 + idle)
    audits = net.lb.conntrack_audits(1.0 + idle)
    assert list(audits) == [CLIENT_EDGE] and len(audits[CLIENT_EDGE]) == 2
    net.fab.send_all(audits)
    assert len(audit_entries(net)) == 2
    assert net.lb.conntrack_audits(1.0 + idle + 1) == {}, "audited once"

    lost = net.syn("c1", 42010, TCP_ACK | 0x01)  # its FIN's copy never reaches the controller
    assert lost.packet_ins
    member = net.syn("c1", 42011, TCP_ACK).hosts
    for now in (1.0 + idle + 5, 1.0 + idle + 10):
        net.fab.clock(now)
        assert net.syn("c1", 42011, TCP_ACK).hosts == member, "the audit entry forwards as the member's entry"
    removed = net.fab.expire(1.0 + 2 * idle + 1)
    assert len(removed) == 1
    net.fab.flow_removed_to(net.lb, removed)
    assert [row["client"] for row in net.lb.connections()] == [f"{net.ip('c1')}:42011"]
    counters = net.lb.stats()["switch_dispatch"]["counters"]
    assert (counters["conntrack_audits"], counters["conntrack_audit_ended"]) == (2, 1)


def test_an_audit_entry_that_idles_out_leaves_a_newer_connection_on_the_same_ports_alone(ct_net: Net) -> None:
    net = ct_net
    idle = net.lb.config.vip("web").idle_timeout
    copies_to_controller(net, net.syn("c1", 42020), now=1.0)
    net.fab.clock(1.0 + idle)
    net.fab.send_all(net.lb.conntrack_audits(1.0 + idle))
    copies_to_controller(net, net.syn("c1", 42020, TCP_ACK | 0x01), now=1.0 + idle)
    assert net.lb.connections() == []
    net.fab.dps[CLIENT_EDGE].switch.conntrack.clear()  # the tracker forgot the old connection; the port is reused
    net.fab.clock(2.0 + idle)
    reused = net.syn("c1", 42020)
    copies_to_controller(net, reused, now=2.0 + idle)
    [row] = net.lb.connections()
    removed = net.fab.expire(2.0 + 3 * idle)
    net.fab.flow_removed_to(net.lb, [(dpid, msg) for dpid, msg in removed if msg.priority == Priority.CT_AUDIT])
    assert net.lb.connections() == [row], "the idled-out entry was the old connection's"


def test_past_max_connections_the_switch_still_carries_conntrack_connections_the_controller_does_not_list() -> None:
    net = Net(make_config(pinning="conntrack", max_connections=2))
    syns = {sport: net.syn("c1", sport) for sport in (42030, 42031, 42032)}
    for syn in syns.values():
        copies_to_controller(net, syn)
    assert all(syn.hosts for syn in syns.values()), "the switch admits every SYN"
    assert len(net.lb.connections()) == 2
    assert net.lb.stats()["switch_dispatch"]["counters"]["untracked_over_cap"] == 1
    copies_to_controller(net, net.syn("c1", 42032, TCP_ACK | 0x01))
    assert len(net.lb.connections()) == 2, "the end copy of an unlisted connection changes nothing"


def test_the_vips_syn_entry_is_there_while_the_controller_dispatches_it() -> None:
    net = Net(make_config(dispatch="controller"))
    edge = net.fab.dps[CLIENT_EDGE].switch

    def syn_entries() -> list[Any]:
        return [e for e in edge.dump_flows(Table.CONNECTIONS) if e.priority == Priority.VIP_SYN]

    assert len(syn_entries()) == 1
    net.apply(make_config())  # dispatch: switch
    assert syn_entries() == []
    net.apply(make_config(dispatch="controller"), now=2.0)
    assert len(syn_entries()) == 1
