"""Level-2 tests: the LoadBalancer core's flows on a four-switch fake fabric (FabricTopo), traced end to end.

Every switch of ``FabricTopo().fabric_config()`` is a fake OpenFlow 1.3 datapath; links deliver an output on a link
port to the peer switch, an output on a host port reaches the host. The core's messages are sent exactly as the shell
sends them (bound to the datapath, in order), and packet-ins are fed back as the shell feeds them.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

from nlb_sdn.config import Config, dump_config, parse_config, vip_mac
from nlb_sdn.flows.pipeline import KIND_MASK, LBU_MASK, VIP_MASK, CookieKind, Priority, Table, make_cookie
from nlb_sdn.framework import MAIN_DISPATCHER, ofp_event, ofproto_v1_3 as ofp, ofproto_v1_3_parser as parser
from tests.fakeof.fabric import CoreNet, FakeFabric, reason_name
from tests.fakeof.switch import BROADCAST_MAC, TCP_ACK, TCP_SYN, arp_packet, make_packet, tcp_packet
from tests.lib.configs import topo_config
from tests.lib.shell_double import ShellDouble
from topologies import FabricTopo

TCP_PSH = 0x08
TCP_FIN = 0x01
VIP = "10.0.0.100"
VIP_MAC = vip_mac(VIP)
API = "10.0.0.101"
API_MAC = vip_mac(API)
MEMBER_PORT = 8080
CLIENT_EDGE, BACKEND_EDGE, CORE_A, CORE_B = 1, 2, 3, 4
BACKENDS = ("h1", "h2", "h3")


def make_config(weights: tuple[int, ...] = (1, 1, 2), max_connections: int = 100_000, api: bool = True) -> Config:
    """VIP web (10.0.0.100:80 → h1..h3:8080, weights) and VIP api (10.0.0.101:443 → h1:8443) on FabricTopo."""
    topo = FabricTopo()
    vips: list[dict[str, Any]] = [
        {
            "name": "web",
            "address": VIP,
            "port": 80,
            "members": [
                {"name": name, "address": topo.host_ip(name), "port": MEMBER_PORT, "weight": weight}
                for name, weight in zip(BACKENDS, weights, strict=True)
            ],
        }
    ]
    if api:
        vips.append(
            {
                "name": "api",
                "address": API,
                "port": 443,
                "members": [{"name": "h1", "address": topo.host_ip("h1"), "port": 8443}],
            }
        )
    for vip in vips:  # the ICMP entries (on by default) are counted by tests/fakeof/test_icmp.py, not here
        vip["icmp"] = {"answer_ping": False, "relay_errors": False}
    return topo_config(topo, vips, max_connections=max_connections)


class Net(CoreNet):
    """The core, the fabric it drives, and a member's reply segments."""

    def reply(
        self,
        member: str,
        client: str,
        cport: int,
        flags: int = TCP_SYN | TCP_ACK,
        mport: int = MEMBER_PORT,
        payload: bytes = b"",
    ) -> dict[str, Any]:
        """A segment a member sends back to a client (straight to the client's MAC and address)."""
        return tcp_packet(
            self.mac(member), self.mac(client), self.ip(member), self.ip(client), mport, cport, flags, payload=payload
        )


@pytest.fixture
def net() -> Net:
    return Net(make_config())


def vip_id_of(lb: ShellDouble, name: str) -> int:
    return lb.vip_id(name)


# -- the pipeline as installed -----------------------------------------------------------------------------------------


def test_every_switch_gets_the_same_pipeline_and_its_own_paths(net: Net) -> None:
    for dpid, dp in net.fab.dps.items():
        switch = dp.switch
        assert switch.flow_count(Table.CLASSIFY) == 3 + 3 * 2  # ARP, IPv4, miss + service, drop, probe punt per VIP
        assert switch.flow_count(Table.CONNECTIONS) == 2 + 2  # SYN punt and miss punt + each VIP service's SYN entry
        assert switch.flow_count(Table.REVERSE) == 1
        assert switch.flow_count(Table.FORWARD) == 1 + 6  # miss + one path per host
        for table in (
            Table.SWITCH_CONNECTIONS,
            Table.SWITCH_REVERSE,
            Table.SWITCH_SELECT,
            Table.CT_FORWARD,
            Table.CT_REVERSE,
        ):
            assert switch.flow_count(table) == 1  # misses of the switch-dispatch and conntrack tables
        assert not net.fab.connection_flows(dpid, Table.CONNECTIONS)
    # Reinstalling (a reconnect) replaces identical entries instead of piling up.
    net.fab.install(net.lb)
    assert all(dp.switch.flow_count() == 9 + 4 + 1 + 7 + 5 for dp in net.fab.dps.values())


# -- ARP --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("client", ["c1", "c2", "c3"])
def test_arp_for_the_vip_is_punted_and_answered_to_the_asking_port_only(net: Net, client: str) -> None:
    request = arp_packet(1, net.mac(client), net.ip(client), VIP)
    first = net.fab.inject(client, request)
    assert not first.delivered and not first.stray, "a broadcast must never be flooded"
    assert [dpid for dpid, _ in first.packet_ins] == [CLIENT_EDGE]
    pi = first.packet_ins[0][1]
    assert (pi.table_id, pi.reason, pi.max_len, pi.in_port) == (Table.CLASSIFY, ofp.OFPR_ACTION, 128, net.port(client))

    answer = net.fab.to_controller(net.lb, first, now=1.0)
    assert answer.hosts == [client]
    reply = answer.to(client)[0]
    assert (reply["eth_src"], reply["eth_dst"]) == (VIP_MAC, net.mac(client))
    assert (reply["arp_op"], reply["arp_sha"], reply["arp_spa"]) == (2, VIP_MAC, VIP)
    assert (reply["arp_tha"], reply["arp_tpa"]) == (net.mac(client), net.ip(client))
    assert not answer.packet_ins


def test_arp_for_fabric_hosts_is_answered_and_unknown_targets_are_not(net: Net) -> None:
    first = net.fab.inject("h2", arp_packet(1, net.mac("h2"), net.ip("h2"), net.ip("c3")))
    assert [dpid for dpid, _ in first.packet_ins] == [BACKEND_EDGE]
    answer = net.fab.to_controller(net.lb, first, now=1.0)
    assert answer.hosts == ["h2"] and answer.to("h2")[0]["arp_sha"] == net.mac("c3")

    unknown = net.fab.inject("c1", arp_packet(1, net.mac("c1"), net.ip("c1"), "10.0.0.99"))
    assert net.fab.to_controller(net.lb, unknown, now=1.0).nothing
    assert net.lb.stats()["dropped"]["arp_unknown_target"] == 1
    # A gratuitous ARP reply is punted too, but never answered or forwarded.
    gratuitous = net.fab.inject("c1", arp_packet(2, net.mac("c1"), net.ip("c1"), net.ip("c1")))
    assert net.fab.to_controller(net.lb, gratuitous, now=1.0).nothing


# -- a new connection -------------------------------------------------------------------------------------------------


def test_syn_is_punted_at_the_edge_then_plumbed_and_delivered_to_exactly_one_backend(net: Net) -> None:
    syn = net.to_vip("c1", 40000)
    first = net.fab.inject("c1", syn)
    assert not first.delivered and not first.stray
    assert first.hops == [(CLIENT_EDGE, net.port("c1"))], "the SYN must not leave the client's edge before plumbing"
    [(dpid, pi)] = first.packet_ins
    assert dpid == CLIENT_EDGE
    assert (pi.table_id, pi.reason, pi.max_len) == (Table.CONNECTIONS, ofp.OFPR_ACTION, ofp.OFPCML_NO_BUFFER)
    assert pi.cookie == make_cookie(CookieKind.BASE, net.lb.lbu_id, vip_id_of(net.lb, "web"))
    assert len(pi.data) == pi.total_len and pi.in_port == net.port("c1")
    entry = first.traces[0][1].hits[-1]
    assert (entry.table_id, entry.priority) == (Table.CONNECTIONS, Priority.VIP_SYN)

    msg = pi.to_msg(net.fab.dps[dpid])
    msgs = net.lb.handle_packet_in(dpid, msg.match["in_port"], msg.data, msg.total_len, msg.table_id, 0.0)
    assert [type(m).__name__ for m in msgs] == ["OFPFlowMod", "OFPFlowMod", "OFPPacketOut"]
    released = net.fab.send(dpid, msgs)

    assert not released.packet_ins and not released.stray
    assert len(released.delivered) == 1, f"exactly one copy, got {released.hosts}"
    [conn] = net.lb.connections()
    member = conn["member"]
    assert released.hosts == [member]
    got = released.to(member)[0]
    assert (got["eth_dst"], got["ipv4_dst"], got["tcp_dst"]) == (net.mac(member), net.ip(member), MEMBER_PORT)
    assert (got["eth_src"], got["ipv4_src"], got["tcp_src"]) == (net.mac("c1"), net.ip("c1"), 40000)
    assert got["tcp_flags"] == TCP_SYN
    # s1 released it (packet-out), then the core s3 and the backend edge s2; s4 and other hosts saw nothing.
    assert released.hops == [(CORE_A, 1), (BACKEND_EDGE, 1)]
    # Both directions are plumbed at the client's edge only.
    assert len(net.fab.connection_flows(CLIENT_EDGE, Table.CONNECTIONS)) == 1
    assert len(net.fab.connection_flows(CLIENT_EDGE, Table.REVERSE)) == 1
    for other in (BACKEND_EDGE, CORE_A, CORE_B):
        assert not net.fab.connection_flows(other, Table.CONNECTIONS)
        assert not net.fab.connection_flows(other, Table.REVERSE)


def test_next_segments_bypass_the_controller_and_count_on_the_connection_entry(net: Net) -> None:
    member = net.open("c2", 41000)
    [forward] = net.fab.connection_flows(CLIENT_EDGE, Table.CONNECTIONS)
    assert forward.n_packets == 0  # the SYN was released with the entry's actions, not through it
    packets_in = net.lb.stats()["packet_in"]["total"]
    segments = [
        net.to_vip("c2", 41000, TCP_ACK),
        net.to_vip("c2", 41000, TCP_ACK | TCP_PSH, payload=b"GET / HTTP/1.0\r\n\r\n" + b"x" * 1400),
        net.to_vip("c2", 41000, TCP_ACK | TCP_FIN),
    ]
    last_bytes = forward.n_bytes
    for n, segment in enumerate(segments, start=1):
        went = net.fab.inject("c2", segment)
        assert not went.packet_ins and not went.stray
        assert went.hosts == [member]
        got = went.to(member)[0]
        assert (got["eth_dst"], got["ipv4_dst"], got["tcp_dst"]) == (net.mac(member), net.ip(member), MEMBER_PORT)
        assert got["tcp_flags"] == segment["tcp_flags"] and got["payload"] == segment["payload"]
        assert went.hops == [(CLIENT_EDGE, net.port("c2")), (CORE_A, 1), (BACKEND_EDGE, 1)]
        assert forward.n_packets == n and forward.n_bytes > last_bytes
        last_bytes = forward.n_bytes
    assert net.lb.stats()["packet_in"]["total"] == packets_in
    # A SYN never rides a connection entry (the VIP's SYN entry outranks them): a retransmission of the first SYN
    # (same sequence number) goes to the controller, which sends it where the connection went.
    first_syn = net.to_vip("c2", 41000)
    again, after = net.fab.run(net.lb, "c2", first_syn, now=1.0)
    assert len(again.packet_ins) == 1 and after.hosts == [member]
    assert net.lb.stats()["packet_in"]["syn_retransmit"] >= 1


def test_member_reply_is_rewritten_back_to_the_vip_at_the_client_edge(net: Net) -> None:
    member = net.open("c3", 42000)
    [reverse] = net.fab.connection_flows(CLIENT_EDGE, Table.REVERSE)
    for n, flags in enumerate((TCP_SYN | TCP_ACK, TCP_ACK | TCP_PSH), start=1):
        back = net.fab.inject(member, net.reply(member, "c3", 42000, flags, payload=b"HTTP/1.0 200 OK\r\n"))
        assert not back.packet_ins and not back.stray
        assert back.hosts == ["c3"]
        got = back.to("c3")[0]
        assert (got["eth_src"], got["ipv4_src"], got["tcp_src"]) == (VIP_MAC, VIP, 80)
        assert (got["eth_dst"], got["ipv4_dst"], got["tcp_dst"]) == (net.mac("c3"), net.ip("c3"), 42000)
        assert back.hops == [(BACKEND_EDGE, net.port(member)), (CORE_A, 2), (CLIENT_EDGE, 1)]
        assert reverse.n_packets == n
    # The rewrite happened only at the client's edge: s2 and s3 passed the reply on untouched.
    for _dpid, trace in back.traces[:2]:
        assert [e.table_id for e in trace.hits] == [Table.CLASSIFY, Table.REVERSE, Table.SWITCH_REVERSE, Table.FORWARD]
        assert trace.outputs[0][1]["ipv4_src"] == net.ip(member)


# -- traffic that is not load balanced --------------------------------------------------------------------------------


def test_direct_client_member_traffic_is_forwarded_untouched(net: Net) -> None:
    net.open("c1", 43000)  # a VIP connection from the same client exists; direct traffic must not be touched by it
    out = tcp_packet(net.mac("c1"), net.mac("h1"), net.ip("c1"), net.ip("h1"), 43001, MEMBER_PORT, TCP_SYN)
    went = net.fab.inject("c1", out)
    assert went.hosts == ["h1"] and not went.packet_ins and not went.stray
    assert went.to("h1")[0] == {k: v for k, v in out.items() if k != "in_port"}
    back = tcp_packet(net.mac("h1"), net.mac("c1"), net.ip("h1"), net.ip("c1"), MEMBER_PORT, 43001, TCP_ACK)
    came = net.fab.inject("h1", back)
    assert came.hosts == ["c1"] and not came.packet_ins
    assert came.to("c1")[0] == back
    # Host to host on the same edge never crosses a core switch.
    local = tcp_packet(net.mac("h2"), net.mac("h3"), net.ip("h2"), net.ip("h3"), 5000, 22, TCP_SYN)
    assert net.fab.inject("h2", local).hops == [(BACKEND_EDGE, net.port("h2"))]


@pytest.mark.parametrize(
    "what",
    [
        "unknown_mac",
        "broadcast_ip",
        "ipv6",
        "lldp",
        "vip_other_port",
        "vip_udp",
        "vip_icmp",
        "vip_other_port_api_address",
    ],
)
def test_traffic_nobody_should_get_is_dropped_without_packet_in(net: Net, what: str) -> None:
    c1_mac, c1_ip = net.mac("c1"), net.ip("c1")
    pkt = {
        "unknown_mac": tcp_packet(c1_mac, "00:00:00:00:00:99", c1_ip, "10.0.0.99", 40000, 80),
        "broadcast_ip": make_packet(
            eth_src=c1_mac, eth_dst=BROADCAST_MAC, ipv4_src=c1_ip, ipv4_dst="255.255.255.255", udp_src=68, udp_dst=67
        ),
        "ipv6": make_packet(eth_src=c1_mac, eth_dst=net.mac("h1"), eth_type=0x86DD),
        "lldp": make_packet(eth_src=c1_mac, eth_dst="01:80:c2:00:00:0e", eth_type=0x88CC),
        "vip_other_port": net.to_vip("c1", 40000, vport=443),
        "vip_udp": make_packet(eth_src=c1_mac, eth_dst=VIP_MAC, ipv4_src=c1_ip, ipv4_dst=VIP, udp_src=5000, udp_dst=80),
        "vip_icmp": make_packet(eth_src=c1_mac, eth_dst=VIP_MAC, ipv4_src=c1_ip, ipv4_dst=VIP, ip_proto=1),
        "vip_other_port_api_address": net.to_vip("c1", 40000, vip=API, vport=80),
    }[what]
    went = net.fab.inject("c1", pkt)
    assert went.nothing, went.traces[0][1].log
    assert went.hops == [(CLIENT_EDGE, net.port("c1"))]
    assert net.lb.stats()["packet_in"] == {}


# -- selection --------------------------------------------------------------------------------------------------------


def test_400_syns_reach_the_backends_exactly_by_weight(net: Net) -> None:
    reached: Counter[str] = Counter()
    for i in range(400):
        client = ("c1", "c2", "c3")[i % 3]
        first, after = net.fab.run(net.lb, client, net.to_vip(client, 20000 + i), now=1.0)
        assert len(first.packet_ins) == 1 and not first.delivered
        assert len(after.delivered) == 1 and not after.packet_ins and not after.stray
        reached.update(after.hosts)
    assert reached == {"h1": 100, "h2": 100, "h3": 200}
    assert net.lb.stats()["selections"]["web"] == {"h1": 100, "h2": 100, "h3": 200}
    assert len(net.fab.connection_flows(CLIENT_EDGE, Table.CONNECTIONS)) == 400
    assert len(net.fab.connection_flows(CLIENT_EDGE, Table.REVERSE)) == 400
    assert net.lb.stats()["packet_in"] == {"total": 400, "new_connection": 400}


def test_duplicate_syn_punted_twice_before_plumbing_gets_the_same_member(net: Net) -> None:
    for port in range(44000, 44004):  # SWRR 1:1:2 goes h3 h1 h2 h3 | h3 h1: a second pick would differ
        net.open("c1", port)
    syn = net.to_vip("c2", 45000)
    first, second = net.fab.inject("c2", syn), net.fab.inject("c2", syn)
    assert len(first.packet_ins) == len(second.packet_ins) == 1
    # Both packet-ins reach the controller before any of its answers reaches the switch.
    answers = []
    for went in (first, second):
        ((dpid, pi),) = went.packet_ins
        answers.append(net.lb.handle_packet_in(dpid, pi.in_port, pi.data, pi.total_len, pi.table_id, 2.0))
    (conn,) = net.lb.connections(vip="web")[4:]
    delivered = [net.fab.send(CLIENT_EDGE, msgs) for msgs in answers]
    assert [d.hosts for d in delivered] == [[conn["member"]], [conn["member"]]]
    assert len(net.fab.connection_flows(CLIENT_EDGE, Table.CONNECTIONS)) == 5
    assert net.lb.stats()["packet_in"]["syn_retransmit"] == 1
    assert sum(net.lb.stats()["connections"]["per_member"]["web"].values()) == 5
    assert sum(net.lb.stats()["selections"]["web"].values()) == 5


def test_a_syn_with_data_goes_up_whole_and_is_released_with_its_data(net: Net) -> None:
    syn = net.to_vip("c1", 46000, payload=b"T" * 400)  # a SYN with data (TCP Fast Open) is longer than max_len
    first = net.fab.inject("c1", syn)
    [(_dpid, pi)] = first.packet_ins
    assert len(pi.data) == pi.total_len > 128
    released = net.fab.to_controller(net.lb, first, now=1.0)
    [member] = [c["member"] for c in net.lb.connections()]
    assert released.hosts == [member] and released.to(member)[0]["payload"] == b"T" * 400
    assert "held_truncated" not in net.lb.stats()["packet_in"]


def test_a_truncated_late_segment_replumbs_its_connection_without_release_and_the_retransmission_passes(
    net: Net,
) -> None:
    member = net.open("c1", 46001)
    net.fab.flow_removed_to(net.lb, net.fab.expire(100.0))  # its entries idled out; the route lingers
    segment = net.to_vip("c1", 46001, TCP_ACK, payload=b"U" * 400)
    net.fab.clock(101.0)
    first = net.fab.inject("c1", segment)
    [(_dpid, pi)] = first.packet_ins
    assert len(pi.data) == 128 < pi.total_len
    assert net.fab.to_controller(net.lb, first, now=101.0).nothing
    assert net.lb.stats()["packet_in"]["held_truncated"] == 1
    again = net.fab.inject("c1", segment)
    assert again.hosts == [member] and not again.packet_ins and again.to(member)[0]["payload"] == b"U" * 400


# -- expiry -----------------------------------------------------------------------------------------------------------


def test_idle_connection_expires_in_both_directions_and_the_table_empties(net: Net) -> None:
    member = net.open("c1", 47000, now=100.0)
    net.fab.clock(105.0)
    assert net.fab.inject("c1", net.to_vip("c1", 47000, TCP_ACK)).hosts == [member]
    assert net.fab.inject(member, net.reply(member, "c1", 47000, TCP_ACK)).hosts == ["c1"]
    assert net.fab.expire(119.9) == []
    removed = net.fab.expire(120.0)
    assert sorted((dpid, msg.table_id, reason_name(msg.reason)) for dpid, msg in removed) == [
        (CLIENT_EDGE, Table.CONNECTIONS, "idle"),
        (CLIENT_EDGE, Table.REVERSE, "idle"),
    ]
    follow_up = net.fab.flow_removed_to(net.lb, removed)
    assert follow_up.nothing
    assert net.lb.connections() == [] and net.lb.stats()["connections"]["per_member"] == {}
    for dpid in net.fab.dps:
        assert not net.fab.connection_flows(dpid, Table.CONNECTIONS)
        assert not net.fab.connection_flows(dpid, Table.REVERSE)
    # A late segment is now an orphan: punted once (table-1 miss, then table-4 miss), dropped by the core.
    late = net.fab.inject("c1", net.to_vip("c1", 47000, TCP_ACK))
    assert [pi.table_id for _, pi in late.packet_ins] == [Table.SWITCH_CONNECTIONS]
    assert net.fab.to_controller(net.lb, late, now=121.0).nothing
    assert net.lb.stats()["dropped"]["orphan"] == 1
    assert not net.fab.connection_flows(CLIENT_EDGE, Table.CONNECTIONS)


def test_one_direction_expiring_makes_the_controller_delete_the_other(net: Net) -> None:
    member = net.open("c2", 48000, now=100.0)
    net.fab.clock(110.0)  # the member keeps talking; the client is silent
    assert net.fab.inject(member, net.reply(member, "c2", 48000, TCP_ACK)).hosts == ["c2"]
    removed = net.fab.expire(115.0)
    assert [(msg.table_id, reason_name(msg.reason)) for _, msg in removed] == [(Table.CONNECTIONS, "idle")]
    assert len(net.fab.connection_flows(CLIENT_EDGE, Table.REVERSE)) == 1
    assert net.fab.flow_removed_to(net.lb, removed).nothing
    assert not net.fab.connection_flows(CLIENT_EDGE, Table.CONNECTIONS)
    assert not net.fab.connection_flows(CLIENT_EDGE, Table.REVERSE)
    assert net.lb.connections() == []
    # The switch reports the reverse entry's deletion; the core has already forgotten it and sends nothing.
    deleted = net.fab.drain_flow_removed(CLIENT_EDGE)
    assert [(msg.table_id, reason_name(msg.reason)) for _, msg in deleted] == [(Table.REVERSE, "delete")]
    assert net.fab.flow_removed_to(net.lb, deleted).nothing
    # The reply of the dead connection is no longer rewritten (it goes to the client with the member's address).
    stale = net.fab.inject(member, net.reply(member, "c2", 48000, TCP_ACK))
    assert stale.to("c2")[0]["ipv4_src"] == net.ip(member)


# -- runtime config changes -------------------------------------------------------------------------------------------


def test_removed_member_keeps_its_connection_but_gets_no_new_ones(net: Net) -> None:
    opened = {net.open("c1", port): port for port in range(49000, 49004)}  # 1:1:2 → every member at least once
    assert set(opened) == set(BACKENDS)
    data = dump_config(net.lb.config)
    data["vips"][0]["members"] = [m for m in data["vips"][0]["members"] if m["name"] != "h3"]
    changes = net.lb.apply_config(parse_config(data), dpids=list(net.fab.dps))
    assert changes == {dpid: [] for dpid in net.fab.dps}, "a member change only changes the selector"
    net.fab.send_all(changes)
    # The existing connection to h3 still flows, both ways.
    port = opened["h3"]
    assert net.fab.inject("c1", net.to_vip("c1", port, TCP_ACK)).hosts == ["h3"]
    assert net.fab.inject("h3", net.reply("h3", "c1", port, TCP_ACK)).to("c1")[0]["ipv4_src"] == VIP
    reached: Counter[str] = Counter()
    for sport in range(50000, 50040):
        _, after = net.fab.run(net.lb, "c2", net.to_vip("c2", sport), now=2.0)
        reached.update(after.hosts)
    assert reached == {"h1": 20, "h2": 20}


def test_deleting_a_vip_removes_its_entries_and_connections_and_its_traffic_drops(net: Net) -> None:
    web_member = net.open("c1", 51000)
    net.open("c2", 51001)
    net.fab.clock(0.0)
    _, after = net.fab.run(net.lb, "c3", net.to_vip("c3", 51002, vip=API, vport=443), now=0.0)
    assert after.hosts == ["h1"] and after.to("h1")[0]["tcp_dst"] == 8443
    web_id, api_id = vip_id_of(net.lb, "web"), vip_id_of(net.lb, "api")
    web_base = make_cookie(CookieKind.BASE, net.lb.lbu_id, web_id)
    web_nat = make_cookie(CookieKind.NAT, net.lb.lbu_id, web_id)
    api_nat = make_cookie(CookieKind.NAT, net.lb.lbu_id, api_id)
    mask = KIND_MASK | LBU_MASK | VIP_MASK
    edge = net.fab.dps[CLIENT_EDGE].switch
    # The VIP service entry; the shared drop entry for the address carries no VIP id.
    assert edge.flow_count(Table.CLASSIFY, web_base, mask) == 1
    assert edge.flow_count(None, web_nat, mask) == 4 and edge.flow_count(None, api_nat, mask) == 2

    data = dump_config(net.lb.config)
    data["vips"] = [v for v in data["vips"] if v["name"] != "web"]
    net.fab.send_all(net.lb.apply_config(parse_config(data), dpids=list(net.fab.dps)))

    for dpid, dp in net.fab.dps.items():
        assert dp.switch.flow_count(Table.CLASSIFY, web_base, mask) == 0, dpid
        assert dp.switch.flow_count(None, web_nat, mask) == 0, dpid
    assert edge.flow_count(None, api_nat, mask) == 2
    assert [c["vip"] for c in net.lb.connections()] == ["api"]
    # The deletions come back as flow-removed; the core ignores them and keeps the api connection.
    deleted = net.fab.drain_flow_removed(CLIENT_EDGE)
    assert sorted(msg.table_id for _, msg in deleted) == [1, 1, 2, 2]
    assert net.fab.flow_removed_to(net.lb, deleted).nothing
    assert [c["vip"] for c in net.lb.connections()] == ["api"]

    # Web traffic, old connection or new, now goes nowhere and never reaches the controller.
    for pkt in (net.to_vip("c1", 51000, TCP_ACK), net.to_vip("c1", 52000)):
        assert net.fab.inject("c1", pkt).nothing
    assert net.fab.inject(web_member, net.reply(web_member, "c1", 51000, TCP_ACK)).to("c1")[0]["ipv4_src"] != VIP
    arp = net.fab.to_controller(net.lb, net.fab.inject("c1", arp_packet(1, net.mac("c1"), net.ip("c1"), VIP)), 1.0)
    assert arp.nothing
    # The api VIP is untouched.
    assert net.fab.inject("c3", net.to_vip("c3", 51002, TCP_ACK, vip=API, vport=443)).hosts == ["h1"]


def test_connection_cap_refusal_leaves_no_flows(net: Net) -> None:
    capped = Net(make_config(max_connections=2))
    capped.open("c1", 53000)
    capped.open("c2", 53000)
    for _attempt in range(2):  # the SYN and its retransmission
        first, after = capped.fab.run(capped.lb, "c3", capped.to_vip("c3", 53000), now=1.0)
        assert len(first.packet_ins) == 1
        assert after.nothing, "a refused SYN is neither plumbed nor released"
    assert capped.lb.stats()["refused"] == {"cap": 2}
    assert capped.lb.stats()["connections"]["total"] == 2
    edge = capped.fab.dps[CLIENT_EDGE].switch
    for table in (Table.CONNECTIONS, Table.REVERSE):
        flows = capped.fab.connection_flows(CLIENT_EDGE, table)
        assert len(flows) == 2
        assert all(e.match.get("ipv4_src", e.match.get("ipv4_dst")) != capped.ip("c3") for e in flows)
    assert edge.flow_count() == 9 + 4 + 1 + 7 + 5 + 4
    # Once a connection expires, there is room again.
    removed = capped.fab.expire(100.0)
    capped.fab.flow_removed_to(capped.lb, removed)
    assert capped.open("c3", 53000, now=100.0) in BACKENDS


# -- the os-ken shell -------------------------------------------------------------------------------------------------


def flow_stats_reply(dp: Any) -> Any:
    """The OFPFlowStatsReply a switch would send for all its flows."""
    body = [
        parser.OFPFlowStats(
            table_id,
            0,
            0,
            priority,
            0,
            0,
            0,
            cookie,
            0,
            0,
            parser.OFPMatch(**{k: tuple(v) if isinstance(v, list) else v for k, v in match.items()}),
            [],
        )
        for table_id, priority, match, cookie in dp.switch.flow_stats()
    ]
    reply = parser.OFPFlowStatsReply(dp, body=body, flags=0)
    return reply


def test_classifier_shell_drives_the_fabric(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from nlb_sdn.apps.classifier import CONFIG_ENV, Classifier

    config = make_config(api=False)
    path = tmp_path / "nlb.json"
    path.write_text(json.dumps(dump_config(config)))
    monkeypatch.setenv(CONFIG_ENV, str(path))
    app = Classifier()
    fab = FakeFabric(config)
    fab.clock(0.0)
    for dpid, dp in fab.dps.items():
        app.switch_features(ofp_event.EventOFPSwitchFeatures(parser.OFPSwitchFeatures(dp, datapath_id=dpid)))
        change = ofp_event.EventOFPStateChange(dp)
        change.state = MAIN_DISPATCHER
        app.state_change(change)
        assert dp.miss_send_len == 128 and isinstance(dp.sent[-1], parser.OFPFlowStatsRequest)
        assert dp.switch.flow_count() == 6 + 3 + 1 + 7 + 5
        app.flow_stats_reply(ofp_event.EventOFPFlowStatsReply(flow_stats_reply(dp)))
        assert dp.switch.flow_count() == 6 + 3 + 1 + 7 + 5, "reconciling a fresh switch removes nothing"
    assert sorted(app.datapaths) == sorted(fab.dps)

    first = fab.inject("c1", tcp_packet("00:00:00:00:00:01", VIP_MAC, "10.0.0.1", VIP, 40000, 80))
    [(dpid, pi)] = first.packet_ins
    app.packet_in(ofp_event.EventOFPPacketIn(pi.to_msg(fab.dps[dpid])))
    released = fab.collect()
    [conn] = app.api.connections()
    assert released.hosts == [conn["member"]] and released.to(conn["member"])[0]["tcp_dst"] == MEMBER_PORT
    assert app.api.stats()["flow_mod"] == 4 * (17 + 5) + 2 and app.api.stats()["packet_out"] == 1

    removed = fab.expire(1e9)
    assert len(removed) == 2
    for _, msg in removed:
        app.flow_removed(ofp_event.EventOFPFlowRemoved(msg))
    assert app.api.connections() == [] and app.errors == {}

    # A runtime change through the REST backend path reaches every connected switch.
    data = dump_config(config)
    data["vips"] = []
    app.api.apply_config(parse_config(data))
    for dp in fab.dps.values():
        assert dp.switch.flow_count(Table.CLASSIFY) == 3
    assert fab.inject("c1", tcp_packet("00:00:00:00:00:01", VIP_MAC, "10.0.0.1", VIP, 40001, 80)).nothing

    # A handler failure is counted, not raised.
    app.packet_in(ofp_event.EventOFPPacketIn(object()))
    assert app.errors == {"handler:packet_in": 1}


# -- more runtime changes ---------------------------------------------------------------------------------------------


def test_changed_fabric_reinstalls_paths_and_connections_follow_them(net: Net) -> None:
    member = net.open("c1", 54000)
    data = dump_config(net.lb.config)
    # The s1-s3 link goes down.
    data["fabric"]["links"] = [link for link in data["fabric"]["links"] if {link["a"], link["b"]} != {"s1", "s3"}]
    changes = net.lb.apply_config(parse_config(data), dpids=list(net.fab.dps))
    assert set(changes) == set(net.fab.dps)
    net.fab.send_all(changes)
    # The existing connection keeps its table-1/2 flows and now crosses s4.
    went = net.fab.inject("c1", net.to_vip("c1", 54000, TCP_ACK))
    assert went.hosts == [member] and went.hops == [(CLIENT_EDGE, 3), (CORE_B, 1), (BACKEND_EDGE, 2)]
    back = net.fab.inject(member, net.reply(member, "c1", 54000, TCP_ACK))
    assert back.hosts == ["c1"] and back.to("c1")[0]["ipv4_src"] == VIP
    assert [dpid for dpid, _ in back.hops] == [BACKEND_EDGE, CORE_B, CLIENT_EDGE]
    for dp in net.fab.dps.values():
        assert dp.switch.flow_count(Table.FORWARD) == 7  # old paths replaced, not added to
    second = net.open("c2", 54001)
    assert net.fab.inject("c2", net.to_vip("c2", 54001, TCP_ACK)).hops[1] == (CORE_B, 1)
    assert second in BACKENDS


def test_a_pool_without_eligible_members_refuses_and_installs_nothing() -> None:
    idle = Net(make_config(weights=(0, 0, 0), api=False))
    first, after = idle.fab.run(idle.lb, "c1", idle.to_vip("c1", 55000), now=1.0)
    assert len(first.packet_ins) == 1 and after.nothing
    assert idle.lb.stats()["refused"] == {"no_member": 1}
    assert not idle.fab.connection_flows(CLIENT_EDGE, Table.CONNECTIONS)


def test_deleting_one_of_two_vips_on_one_address_leaves_no_entry_with_its_id() -> None:
    config = make_config(api=False)
    data = dump_config(config)
    data["vips"].append(dict(data["vips"][0], name="web-tls", port=443))
    net = Net(parse_config(data))
    tls_id = vip_id_of(net.lb, "web-tls")
    tls_cookie = make_cookie(CookieKind.BASE, net.lb.lbu_id, tls_id)
    mask = KIND_MASK | LBU_MASK | VIP_MASK
    edge = net.fab.dps[CLIENT_EDGE].switch
    assert edge.flow_count(Table.CLASSIFY, tls_cookie, mask) >= 1
    data["vips"] = [v for v in data["vips"] if v["name"] != "web-tls"]
    net.fab.send_all(net.lb.apply_config(parse_config(data), dpids=list(net.fab.dps)))
    # Behaviour is right: web still works, 443 to the address drops.
    assert net.fab.inject("c1", net.to_vip("c1", 56000, vport=443)).nothing
    assert len(net.fab.inject("c1", net.to_vip("c1", 56001)).packet_ins) == 1
    # But an entry tagged with the deleted VIP's id survives.
    assert edge.flow_count(Table.CLASSIFY, tls_cookie, mask) == 0


def test_a_switch_disconnected_during_a_vip_delete_loses_the_vip_when_it_reconnects(net: Net) -> None:
    member = net.open("c1", 57000)
    web_id = vip_id_of(net.lb, "web")
    mask = KIND_MASK | LBU_MASK | VIP_MASK
    data = dump_config(net.lb.config)
    data["vips"] = [v for v in data["vips"] if v["name"] != "web"]
    connected = [dpid for dpid in net.fab.dps if dpid != CLIENT_EDGE]  # s1 is reconnecting right now
    net.fab.send_all(net.lb.apply_config(parse_config(data), dpids=connected))
    net.fab.send(CLIENT_EDGE, net.lb.switch_flows(CLIENT_EDGE))  # s1 is back: the shell sends switch_flows
    edge = net.fab.dps[CLIENT_EDGE].switch
    stats = [(e.table_id, e.priority, e.match, e.cookie) for e in edge.dump_flows()]  # ... and asks for flow stats
    net.fab.send(CLIENT_EDGE, net.lb.reconcile(CLIENT_EDGE, stats))
    assert net.fab.inject("c1", net.to_vip("c1", 57000, TCP_ACK)).hosts != [member], "deleted VIP still balanced"
    assert edge.flow_count(Table.CLASSIFY, make_cookie(CookieKind.BASE, net.lb.lbu_id, web_id), mask) == 0
    assert edge.flow_count(None, make_cookie(CookieKind.NAT, net.lb.lbu_id, web_id), mask) == 0
