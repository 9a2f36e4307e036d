"""Tunnel mode with direct server return on fake OpenFlow fabrics (FabricTopo's four switches, and one switch).

A tunnel-mode VIP's SYN is classified at the client's edge, which pushes the MPLS label of the chosen member's host;
the cores forward on the label alone, the backend edge pops it and hands the host the unchanged client->VIP packet.
The host's reply (source VIP) travels as plain IPv4 and meets no VIP entry and no controller.
"""

from __future__ import annotations

from typing import Any

import pytest

from nlb_sdn.config import Config, dump_config, parse_config, vip_mac
from nlb_sdn.dam.atoms import route_key
from nlb_sdn.flows.pipeline import KIND_MASK, CookieKind, Priority, Table, make_cookie
from nlb_sdn.flows.tunnel import ETH_TYPE_MPLS, host_labels
from tests.fakeof.fabric import CoreNet, reason_name
from tests.fakeof.switch import ETH_IPV4, TCP_ACK, TCP_SYN, tcp_packet
from tests.lib.configs import topo_config
from tests.lib.shell_double import ShellDouble
from topologies import FabricTopo, SingleTopo
from topologies.base import LabTopo

TCP_PSH = 0x08
VIP = "10.0.0.100"
VIP_MAC = vip_mac(VIP)
CLIENT_EDGE, BACKEND_EDGE, CORE_A, CORE_B = 1, 2, 3, 4
BACKENDS = ("h1", "h2", "h3")


def tunnel_config(topo: LabTopo | None = None, mode: str = "tunnel") -> Config:
    """VIP web (10.0.0.100:80 over h1..h3:80) in ``mode`` on ``topo`` (FabricTopo by default)."""
    topo = topo or FabricTopo()
    vip = {"name": "web", "address": VIP, "port": 80, "mode": mode, "members": topo.members()}
    return topo_config(topo, [vip])


class Net(CoreNet):
    """The core and the fake fabric it drives, with frame shortcuts."""

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.labels = host_labels(config.fabric)

    def dsr_reply(
        self, member: str, client: str, cport: int, flags: int = TCP_SYN | TCP_ACK, payload: bytes = b""
    ) -> dict[str, Any]:
        """What a member sends back in direct server return: from its MAC, with the VIP as source, to the client."""
        return tcp_packet(self.mac(member), self.mac(client), VIP, self.ip(client), 80, cport, flags, payload=payload)

    def entries(self, dpid: int, table: int, kind: CookieKind) -> list[Any]:
        """The entries of one table of one switch whose cookie is of ``kind``."""
        return [e for e in self.fab.dps[dpid].switch.dump_flows(table) if e.cookie >> 56 == kind]


@pytest.fixture
def net() -> Net:
    return Net(tunnel_config())


def test_every_switch_gets_the_label_entries_and_no_vip_state_beyond_table_0(net: Net) -> None:
    for dpid, dp in net.fab.dps.items():
        switch = dp.switch
        [mpls] = [e for e in switch.dump_flows(Table.CLASSIFY) if e.match.get("eth_type") == ETH_TYPE_MPLS]
        assert mpls.priority == Priority.ETH_TYPE
        labels = net.entries(dpid, Table.TUNNEL, CookieKind.FABRIC)
        assert sorted(e.match["mpls_label"] for e in labels) == sorted(net.labels.values())
        assert switch.flow_count(Table.TUNNEL) == len(net.fab.hosts) + 1  # one per host and the miss
    assert net.labels[net.mac("h1")] == 0x1000B


def test_a_fabric_without_tunnel_vips_has_no_label_entries() -> None:
    plain = Net(tunnel_config(mode="nat"))
    for dp in plain.fab.dps.values():
        assert dp.switch.flow_count(Table.TUNNEL) == 0
        assert not [e for e in dp.switch.dump_flows(Table.CLASSIFY) if e.match.get("eth_type") == ETH_TYPE_MPLS]


def test_syn_travels_labelled_across_the_cores_and_reaches_the_host_unchanged(net: Net) -> None:
    first = net.fab.inject("c1", net.to_vip("c1", 40000))
    [(dpid, pi)] = first.packet_ins
    assert dpid == CLIENT_EDGE and pi.table_id == Table.CONNECTIONS
    msg = pi.to_msg(net.fab.dps[dpid])
    msgs = net.lb.handle_packet_in(dpid, msg.match["in_port"], msg.data, msg.total_len, msg.table_id, 0.0)
    assert [type(m).__name__ for m in msgs] == ["OFPFlowMod", "OFPPacketOut"]  # one direction only
    released = net.fab.send(dpid, msgs)
    assert not released.packet_ins and not released.stray and len(released.delivered) == 1
    [conn] = net.lb.connections()
    member = conn["member"]
    assert conn["mode"] == "tunnel" and conn["label"] == net.labels[net.mac(member)]
    got = released.to(member)[0]
    assert (got["eth_dst"], got["eth_type"], got["mpls"]) == (net.mac(member), ETH_IPV4, [])
    assert (got["ipv4_src"], got["tcp_src"], got["ipv4_dst"], got["tcp_dst"]) == (net.ip("c1"), 40000, VIP, 80)
    assert released.hops == [(CORE_A, 1), (BACKEND_EDGE, 1)]
    # On the trunks the packet carried the host's label; the core matched only table 0's MPLS entry and the label.
    core_dpid, core_trace = released.traces[1]
    assert core_dpid == CORE_A
    assert [(e.table_id, e.cookie >> 56) for e in core_trace.hits] == [
        (Table.CLASSIFY, CookieKind.BASE),
        (Table.TUNNEL, CookieKind.FABRIC),
    ]
    [(_, on_trunk)] = core_trace.outputs
    assert on_trunk["eth_type"] == ETH_TYPE_MPLS and on_trunk["mpls"][0]["label"] == conn["label"]
    # One entry, one direction, at the client's edge only; nothing per connection anywhere else.
    [entry] = net.entries(CLIENT_EDGE, Table.CONNECTIONS, CookieKind.TUNNEL)
    assert entry.cookie & ~0xFFFFFFFF == make_cookie(CookieKind.TUNNEL, net.lb.lbu_id, 1)
    for dpid in net.fab.dps:
        assert not [e for e in net.fab.dps[dpid].switch.dump_flows(Table.REVERSE) if e.priority > 0]
        if dpid != CLIENT_EDGE:
            assert not net.entries(dpid, Table.CONNECTIONS, CookieKind.TUNNEL)


def test_dsr_reply_goes_straight_to_the_client_without_touching_vip_flows(net: Net) -> None:
    member = net.open("c2", 41000)
    [entry] = net.entries(CLIENT_EDGE, Table.CONNECTIONS, CookieKind.TUNNEL)
    for flags in (TCP_SYN | TCP_ACK, TCP_ACK | TCP_PSH):
        back = net.fab.inject(member, net.dsr_reply(member, "c2", 41000, flags, payload=b"HTTP/1.1 200 OK\r\n"))
        assert back.hosts == ["c2"] and not back.packet_ins and not back.stray
        got = back.to("c2")[0]
        assert (got["ipv4_src"], got["tcp_src"], got["ipv4_dst"], got["tcp_dst"]) == (VIP, 80, net.ip("c2"), 41000)
        assert [dpid for dpid, _ in back.hops] == [BACKEND_EDGE, CORE_A, CLIENT_EDGE]
        for _, trace in back.traces:
            assert all(e.cookie >> 56 in (CookieKind.BASE, CookieKind.FABRIC) for e in trace.hits)
            assert not [e for e in trace.hits if e.table_id in (Table.CONNECTIONS, Table.TUNNEL)]
    assert entry.n_packets == 0  # replies never count on the connection entry (the SYN was released past it)


def test_client_segments_bypass_the_controller_and_count_on_the_one_entry(net: Net) -> None:
    member = net.open("c3", 42000)
    [entry] = net.entries(CLIENT_EDGE, Table.CONNECTIONS, CookieKind.TUNNEL)
    segments = [
        net.to_vip("c3", 42000, TCP_ACK),
        net.to_vip("c3", 42000, TCP_ACK | TCP_PSH, payload=b"GET / HTTP/1.1\r\n\r\n" + b"x" * 1400),
    ]
    for n, segment in enumerate(segments, start=1):
        went = net.fab.inject("c3", segment)
        assert went.hosts == [member] and not went.packet_ins
        assert went.to(member)[0]["payload"] == segment["payload"]
        assert entry.n_packets == n
    assert net.lb.stats()["packet_in"]["new_connection"] == 1


def test_idle_end_forgets_the_connection_and_a_late_segment_replumbs_to_the_same_host(net: Net) -> None:
    member = net.open("c1", 43000, now=100.0)
    removed = net.fab.expire(115.0)
    assert [(dpid, msg.table_id, reason_name(msg.reason)) for dpid, msg in removed] == [
        (CLIENT_EDGE, Table.CONNECTIONS, "idle")
    ]
    assert net.fab.flow_removed_to(net.lb, removed).nothing  # nothing else to delete: one direction only
    assert net.lb.connections() == [] and net.lb.stats()["lingering_routes"] == 1
    assert (net.lb.dam_ops[-1].verb, net.lb.dam_ops[-1].key) == ("touch", route_key(net.ip("c1"), 43000, VIP, 80))
    net.fab.clock(116.0)
    late, after = net.fab.run(net.lb, "c1", net.to_vip("c1", 43000, TCP_ACK), now=116.0)
    assert len(late.packet_ins) == 1 and after.hosts == [member]
    [conn] = net.lb.connections()
    assert conn["mode"] == "tunnel" and net.lb.stats()["packet_in"]["replumb"] == 1


def test_a_restarted_controller_adopts_tunnel_entries_and_keeps_them(net: Net) -> None:
    member = net.open("c2", 44000)
    edge = net.fab.dps[CLIENT_EDGE].switch
    fresh = ShellDouble(net.lb.config)
    assert net.fab.send(CLIENT_EDGE, fresh.reconcile(CLIENT_EDGE, edge.flow_stats())).nothing
    assert len(net.entries(CLIENT_EDGE, Table.CONNECTIONS, CookieKind.TUNNEL)) == 1
    [conn] = fresh.connections()
    assert (conn["member"], conn["mode"], conn["client"]) == (member, "tunnel", f"{net.ip('c2')}:44000")
    assert fresh.stats()["rebuilt_connections"] == 1


def test_removing_the_tunnel_vip_removes_its_connections_and_the_label_entries(net: Net) -> None:
    net.open("c1", 45000)
    data = dump_config(net.lb.config)
    data["vips"] = []
    net.fab.send_all(net.lb.apply_config(parse_config(data), dpids=list(net.fab.dps)))
    for dp in net.fab.dps.values():
        assert dp.switch.flow_count(Table.TUNNEL) == 0
        assert dp.switch.flow_count(Table.CONNECTIONS, make_cookie(CookieKind.TUNNEL), KIND_MASK) == 0
        assert not [e for e in dp.switch.dump_flows(Table.CLASSIFY) if e.match.get("eth_type") == ETH_TYPE_MPLS]
    assert net.lb.connections() == []


def test_switching_a_nat_vip_to_tunnel_installs_the_labels_and_new_connections_tunnel() -> None:
    net = Net(tunnel_config(mode="nat"))
    nat_member = net.open("c1", 46000)
    data = dump_config(net.lb.config)
    data["vips"][0]["mode"] = "tunnel"
    net.fab.send_all(net.lb.apply_config(parse_config(data), dpids=list(net.fab.dps)))
    for dp in net.fab.dps.values():
        assert dp.switch.flow_count(Table.TUNNEL) == len(net.fab.hosts) + 1
    # The old connection keeps its nat pair; the new one tunnels.
    assert net.fab.inject("c1", net.to_vip("c1", 46000, TCP_ACK)).to(nat_member)[0]["ipv4_dst"] == net.ip(nat_member)
    member = net.open("c2", 46001)
    assert net.fab.inject("c2", net.to_vip("c2", 46001, TCP_ACK)).to(member)[0]["ipv4_dst"] == VIP
    assert sorted(c["mode"] for c in net.lb.connections()) == ["nat", "tunnel"]


def test_leaving_tunnel_mode_ends_the_tunnel_connections_and_removes_the_labels(net: Net) -> None:
    net.open("c1", 46500)
    data = dump_config(net.lb.config)
    data["vips"][0]["mode"] = "nat"
    net.fab.send_all(net.lb.apply_config(parse_config(data), dpids=list(net.fab.dps)))
    assert not net.entries(CLIENT_EDGE, Table.CONNECTIONS, CookieKind.TUNNEL)
    assert all(dp.switch.flow_count(Table.TUNNEL) == 0 for dp in net.fab.dps.values())
    # The switch reports the deletion; the core forgets the connection and its route (no linger: not an idle end).
    [(dpid, removed)] = net.fab.drain_flow_removed(CLIENT_EDGE)
    assert reason_name(removed.reason) == "delete"
    assert (
        net.lb.handle_flow_removed(dpid, removed.table_id, removed.cookie, dict(removed.match.items()), idle=False)
        == []
    )
    assert net.lb.connections() == [] and net.lb.stats()["lingering_routes"] == 0
    member = net.open("c2", 46501)
    assert net.fab.inject("c2", net.to_vip("c2", 46501, TCP_ACK)).to(member)[0]["ipv4_dst"] == net.ip(member)
    assert [c["mode"] for c in net.lb.connections()] == ["nat"]


def test_a_restarted_controller_drops_tunnel_entries_of_a_vip_no_longer_in_tunnel_mode(net: Net) -> None:
    net.open("c3", 46600)
    edge = net.fab.dps[CLIENT_EDGE].switch
    data = dump_config(net.lb.config)
    data["vips"][0]["mode"] = "nat"
    fresh = ShellDouble(parse_config(data))
    net.fab.send(CLIENT_EDGE, fresh.reconcile(CLIENT_EDGE, edge.flow_stats()))
    assert not net.entries(CLIENT_EDGE, Table.CONNECTIONS, CookieKind.TUNNEL)
    assert fresh.connections() == [] and edge.flow_count(Table.TUNNEL) == 0


def test_a_changed_fabric_moves_the_label_paths(net: Net) -> None:
    member = net.open("c1", 47000)
    data = dump_config(net.lb.config)
    data["fabric"]["links"] = [link for link in data["fabric"]["links"] if {link["a"], link["b"]} != {"s1", "s3"}]
    net.fab.send_all(net.lb.apply_config(parse_config(data), dpids=list(net.fab.dps)))
    went = net.fab.inject("c1", net.to_vip("c1", 47000, TCP_ACK))
    assert went.hosts == [member] and [dpid for dpid, _ in went.hops] == [CLIENT_EDGE, CORE_B, BACKEND_EDGE]
    for dp in net.fab.dps.values():
        assert dp.switch.flow_count(Table.TUNNEL) == len(net.fab.hosts) + 1  # replaced, not added to


def test_on_one_switch_the_label_is_pushed_and_popped_in_the_same_pipeline() -> None:
    net = Net(tunnel_config(SingleTopo()))
    member = net.open("c1", 48000)
    went = net.fab.inject("c1", net.to_vip("c1", 48000, TCP_ACK))
    got = went.to(member)[0]
    assert (got["eth_dst"], got["mpls"], got["ipv4_dst"]) == (net.mac(member), [], VIP)
    back = net.fab.inject(member, net.dsr_reply(member, "c1", 48000, TCP_ACK))
    assert back.hosts == ["c1"] and not back.packet_ins


# -- l7: a migrated connection's entry leads to its host; a new SYN on its ports still meets a router -------------


def l7_config(mode: str = "l7") -> Config:
    """VIP web in ``mode`` on FabricTopo with routers r1 and r2 (mode l7 routes through them)."""
    topo = FabricTopo(routers=2)
    vip = {"name": "web", "address": VIP, "port": 80, "mode": mode, "members": topo.members()}
    if mode == "l7":
        vip["routers"] = ["r1", "r2"]
    return topo_config(topo, [vip])


def test_a_new_syn_on_the_ports_of_a_migrated_connection_goes_to_a_router_not_to_the_old_host() -> None:
    net = Net(l7_config())
    router = net.open("c1", 41000)
    assert router in ("r1", "r2")
    dpid, msgs = net.lb.move_connection("web", net.ip("c1"), 41000, "h2")
    net.fab.send(dpid, msgs)
    assert net.fab.inject("c1", net.to_vip("c1", 41000, TCP_ACK)).hosts == ["h2"], "the migrated connection"
    assert net.fab.inject("c1", net.to_vip("c1", 41000)).hosts == [], "a SYN never rides the host's entry"
    assert net.open("c1", 41000) in ("r1", "r2")
    [row] = net.lb.connections()
    assert row["member"] in ("r1", "r2") and net.lb.stats()["packet_in"]["port_reuse"] >= 1


def test_a_retransmitted_syn_of_a_connection_still_at_its_router_stays_there() -> None:
    net = Net(l7_config())
    router = net.open("c1", 41001)
    assert net.open("c1", 41001) == router
    assert net.lb.stats()["packet_in"]["syn_retransmit"] == 1
