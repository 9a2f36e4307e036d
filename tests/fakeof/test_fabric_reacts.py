"""A fabric that reacts: port status and switch disconnects recompute the paths, connections move to the new path.

FabricTopo on fake datapaths (edges s1, s2; cores s3, s4): a connection from c1 crosses core A (s3); cutting s1-s3
and telling the core (``port_status``) moves it to core B (s4) by table 3 changes alone; mending moves it back.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from nlb_sdn.config import dump_config
from nlb_sdn.core.mastership import Role
from nlb_sdn.events import EventKind
from nlb_sdn.flows.pipeline import Table
from nlb_sdn.framework import (
    DEAD_DISPATCHER,
    MAIN_DISPATCHER,
    ofp_event,
    ofproto_v1_3 as ofp,
    ofproto_v1_3_parser as parser,
)
from tests.fakeof.fabric import FakeFabric
from tests.fakeof.switch import TCP_ACK, tcp_packet
from tests.fakeof.test_pipeline import BACKENDS, VIP, VIP_MAC, Net, make_config
from tests.fakeof.test_tunnel import Net as TunnelNet, tunnel_config
from tests.lib.metrics import samples, value

CLIENT_EDGE, BACKEND_EDGE, CORE_A, CORE_B = 1, 2, 3, 4
UPLINK_A = 1
"""s1's port toward s3 (core A)."""


@pytest.fixture
def net() -> Net:
    return Net(make_config())


def send(net: Net | TunnelNet, messages: dict[int, Any]) -> None:
    """Send an event's messages to the fake switches, as the shell does."""
    for dpid, msgs in messages.items():
        net.fab.send(dpid, msgs)


def ack_path(net: Net, member: str, sport: int) -> list[int]:
    """Send an ACK of c1's connection and one reply; the switches the ACK crossed (both must arrive)."""
    went = net.fab.inject("c1", net.to_vip("c1", sport, TCP_ACK))
    assert went.hosts == [member] and not went.packet_ins and not went.lost
    back = net.fab.inject(member, net.reply(member, "c1", sport, TCP_ACK))
    assert back.hosts == ["c1"] and back.to("c1")[0]["ipv4_src"] == "10.0.0.100" and not back.lost
    return [dpid for dpid, _ in went.hops]


def test_a_cut_uplink_moves_an_established_connection_to_the_other_core_and_back(net: Net) -> None:
    member = net.open("c1", 50000)
    [forward] = net.fab.connection_flows(CLIENT_EDGE, Table.CONNECTIONS)
    assert ack_path(net, member, 50000) == [CLIENT_EDGE, CORE_A, BACKEND_EDGE]

    net.fab.cut(CLIENT_EDGE, UPLINK_A)
    lost = net.fab.inject("c1", net.to_vip("c1", 50000, TCP_ACK))
    assert lost.lost and not lost.delivered  # the switch does not know yet
    effects = net.lb.port_status(CLIENT_EDGE, UPLINK_A, False, 10.0)
    assert CORE_B not in effects.messages, "s4's paths did not change: it gets nothing"
    for msgs in effects.messages.values():
        assert {msg.table_id for msg in msgs} == {Table.FORWARD}, "moving the path is table 3 only"
    send(net, dict(effects.messages))
    assert ack_path(net, member, 50000) == [CLIENT_EDGE, CORE_B, BACKEND_EDGE]
    assert net.fab.connection_flows(CLIENT_EDGE, Table.CONNECTIONS) == [forward], "the connection entry stayed"
    assert forward.n_packets >= 2
    second = net.open("c2", 50001, now=11.0)
    assert net.fab.inject("c2", net.to_vip("c2", 50001, TCP_ACK)).hops[1] == (CORE_B, 1)
    assert second in BACKENDS

    assert not net.lb.port_status(CLIENT_EDGE, UPLINK_A, False, 12.0).messages, "a repeated report changes nothing"
    net.fab.mend(CLIENT_EDGE, UPLINK_A)
    send(net, dict(net.lb.port_status(CLIENT_EDGE, UPLINK_A, True, 20.0).messages))
    assert ack_path(net, member, 50000) == [CLIENT_EDGE, CORE_A, BACKEND_EDGE]
    kinds = [(event.kind, event.detail["port"]) for event in net.lb.events if event.kind.startswith("port_")]
    assert kinds == [(EventKind.PORT_DOWN, UPLINK_A), (EventKind.PORT_UP, UPLINK_A)]
    assert net.lb.stats()["fabric"] == {"down_ports": 0, "down_switches": 0, "path_recomputations": 2}


def test_the_far_end_of_a_cut_link_alone_reroutes_too(net: Net) -> None:
    member = net.open("c1", 50100)
    net.fab.cut(CORE_A, 1)
    send(net, dict(net.lb.port_status(CORE_A, 1, False, 5.0).messages))
    assert ack_path(net, member, 50100) == [CLIENT_EDGE, CORE_B, BACKEND_EDGE]


def test_ports_outside_the_fabric_change_nothing(net: Net) -> None:
    assert not net.lb.port_status(CLIENT_EDGE, 99, False, 1.0).messages
    assert net.lb.stats()["fabric"]["path_recomputations"] == 0
    assert not [event for event in net.lb.events if event.kind == EventKind.PORT_DOWN]


def test_a_host_port_down_removes_the_paths_toward_that_host_and_up_restores_them(net: Net) -> None:
    port = net.port("h3")
    effects = net.lb.port_status(BACKEND_EDGE, port, False, 1.0)
    send(net, dict(effects.messages))
    for dp in net.fab.dps.values():
        assert dp.switch.flow_count(Table.FORWARD) == 6, "one host fewer"
    send(net, dict(net.lb.port_status(BACKEND_EDGE, port, True, 2.0).messages))
    for dp in net.fab.dps.values():
        assert dp.switch.flow_count(Table.FORWARD) == 7


def test_a_disconnected_core_is_routed_around_and_its_return_restores_the_paths(net: Net) -> None:
    member = net.open("c1", 50200)
    effects = net.lb.switch_down(CORE_A, 5.0)
    assert CORE_A not in effects.messages, "a disconnected switch is sent nothing"
    net.fab.cut(CLIENT_EDGE, UPLINK_A)  # as good as gone for the data plane too
    send(net, dict(effects.messages))
    assert ack_path(net, member, 50200) == [CLIENT_EDGE, CORE_B, BACKEND_EDGE]
    assert net.lb.stats()["fabric"]["down_switches"] == 1

    net.fab.mend(CLIENT_EDGE, UPLINK_A)
    back = net.lb.switch_connected(CORE_A, 9.0)
    assert set(back.messages) == {CLIENT_EDGE, BACKEND_EDGE, CORE_A}
    send(net, dict(back.messages))
    assert ack_path(net, member, 50200) == [CLIENT_EDGE, CORE_A, BACKEND_EDGE]
    assert not net.lb.switch_up(CORE_A, 9.5).messages, "already up"


def test_a_restarted_core_is_repaired_from_the_intended_state(net: Net) -> None:
    member = net.open("c1", 50300)
    before = sorted((e.table_id, e.priority, str(e.match)) for e in net.fab.dps[CORE_A].switch.dump_flows())
    send(net, dict(net.lb.switch_down(CORE_A, 5.0).messages))
    fresh = net.fab.restart(CORE_A)
    fresh.switch.now = 6.0
    send(net, dict(net.lb.switch_connected(CORE_A, 6.0).messages))
    stats = [(e.table_id, e.priority, e.match, e.cookie) for e in fresh.switch.dump_flows()]
    assert not net.lb.reconcile(CORE_A, stats, 6.0, after_connect=True), "nothing it holds is stale"
    after = sorted((e.table_id, e.priority, str(e.match)) for e in fresh.switch.dump_flows())
    assert after == before
    assert ack_path(net, member, 50300) == [CLIENT_EDGE, CORE_A, BACKEND_EDGE]


def test_a_reconnecting_edge_keeps_its_live_connection_entries(net: Net) -> None:
    member = net.open("c1", 50400)
    edge = net.fab.dps[CLIENT_EDGE].switch
    connections = net.fab.connection_flows(CLIENT_EDGE, Table.CONNECTIONS)
    send(net, dict(net.lb.switch_down(CLIENT_EDGE, 5.0).messages))
    send(net, dict(net.lb.switch_connected(CLIENT_EDGE, 6.0).messages))
    stats = [(e.table_id, e.priority, e.match, e.cookie) for e in edge.dump_flows()]
    send(net, {CLIENT_EDGE: net.lb.reconcile(CLIENT_EDGE, stats, 6.0, after_connect=True)})
    assert net.fab.connection_flows(CLIENT_EDGE, Table.CONNECTIONS) == connections, "live entries kept"
    assert ack_path(net, member, 50400) == [CLIENT_EDGE, CORE_A, BACKEND_EDGE]
    assert len(net.lb.connections()) == 1


def test_a_tunnel_connection_moves_by_its_label_entries() -> None:
    net = TunnelNet(tunnel_config())
    member = net.open("c3", 50500)
    went = net.fab.inject("c3", net.to_vip("c3", 50500, TCP_ACK))
    assert went.hosts == [member] and went.hops[1] == (CORE_A, 1)
    net.fab.cut(CLIENT_EDGE, UPLINK_A)
    effects = net.lb.port_status(CLIENT_EDGE, UPLINK_A, False, 3.0)
    assert Table.TUNNEL in {msg.table_id for msg in effects.to(CLIENT_EDGE)}
    send(net, dict(effects.messages))
    went = net.fab.inject("c3", net.to_vip("c3", 50500, TCP_ACK))
    assert went.hosts == [member] and went.hops[1] == (CORE_B, 1) and not went.packet_ins
    net.fab.mend(CLIENT_EDGE, UPLINK_A)
    send(net, dict(net.lb.port_status(CLIENT_EDGE, UPLINK_A, True, 4.0).messages))
    assert net.fab.inject("c3", net.to_vip("c3", 50500, TCP_ACK)).hops[1] == (CORE_A, 1)


def test_a_host_port_down_removes_its_label_entries() -> None:
    net = TunnelNet(tunnel_config())
    before = net.fab.dps[CORE_A].switch.flow_count(Table.TUNNEL)
    send(net, dict(net.lb.port_status(BACKEND_EDGE, net.port("h3"), False, 1.0).messages))
    assert net.fab.dps[CORE_A].switch.flow_count(Table.TUNNEL) == before - 1


def ofp_port(port_no: int, down: bool) -> Any:
    """An OFPPort description, its link down when ``down``."""
    state = ofp.OFPPS_LINK_DOWN if down else ofp.OFPPS_LIVE
    return parser.OFPPort(port_no, "00:00:00:00:00:00", f"p{port_no}", 0, state, 0, 0, 0, 0, 0, 0)


def test_the_classifier_shell_feeds_port_status_port_descriptions_and_disconnects_to_the_core(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
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
        assert len(dp.switch.port_desc_requests) == 1, "port states are read on connect"
    syn = tcp_packet("00:00:00:00:00:01", VIP_MAC, "10.0.0.1", VIP, 40000, 80)
    [(dpid, pi)] = fab.inject("c1", syn).packet_ins
    app.packet_in(ofp_event.EventOFPPacketIn(pi.to_msg(fab.dps[dpid])))
    [conn] = app.api.connections()
    ack = dict(syn, tcp_flags=TCP_ACK)

    def via() -> int:
        went = fab.inject("c1", ack)
        assert went.hosts == [conn["member"]]
        return went.hops[1][0]

    assert via() == CORE_A
    edge = fab.dps[CLIENT_EDGE]
    fab.cut(CLIENT_EDGE, UPLINK_A)
    app.port_status(ofp_event.EventOFPPortStatus(parser.OFPPortStatus(edge, ofp.OFPPR_MODIFY, ofp_port(1, True))))
    assert via() == CORE_B
    reply = parser.OFPPortDescStatsReply(edge)
    reply.body = [ofp_port(1, False), ofp_port(3, False)]
    fab.mend(CLIENT_EDGE, UPLINK_A)
    app.port_desc_reply(ofp_event.EventOFPPortDescStatsReply(reply))
    assert via() == CORE_A

    gone = ofp_event.EventOFPStateChange(fab.dps[CORE_A])
    gone.state = DEAD_DISPATCHER
    app.state_change(gone)
    fab.cut(CLIENT_EDGE, UPLINK_A)
    assert via() == CORE_B
    assert app.lb.stats()["fabric"]["down_switches"] == 1 and app.errors == {}
    found = samples(app.metrics.exposition())
    assert value(found, "nlb_sdn_fabric_switches_down") == 1
    assert value(found, "nlb_sdn_fabric_path_recomputations_total") == 3
    assert value(found, "nlb_sdn_events_total", kind="port_down") == 1


def restart_edge(net: Net, now: float) -> None:
    """Restart the client edge (empty tables), reconnect it and reconcile its (empty) flows, as the shell does."""
    send(net, dict(net.lb.switch_down(CLIENT_EDGE, now).messages))
    fresh = net.fab.restart(CLIENT_EDGE)
    fresh.switch.now = now
    send(net, dict(net.lb.switch_connected(CLIENT_EDGE, now).messages))
    stats = [(e.table_id, e.priority, e.match, e.cookie) for e in fresh.switch.dump_flows()]
    send(net, {CLIENT_EDGE: net.lb.reconcile(CLIENT_EDGE, stats, now, after_connect=True)})


def test_a_restarted_edge_gets_its_established_connection_back_and_drops_a_half_open_one(net: Net) -> None:
    established = net.open("c1", 50600)
    ack_path(net, established, 50600)
    net.open("c2", 50601)
    send(net, dict(net.lb.packet_counts(CLIENT_EDGE, {("10.0.0.1", 50600, VIP, 80): 3}, 2.0).messages))
    restart_edge(net, 6.0)
    [entry] = net.fab.connection_flows(CLIENT_EDGE, Table.CONNECTIONS)
    assert entry.match["ipv4_src"] == "10.0.0.1", "only the established connection is back"
    assert ack_path(net, established, 50600) == [CLIENT_EDGE, CORE_A, BACKEND_EDGE], "delivered, no packet-in"
    assert [conn["client"] for conn in net.lb.connections()] == ["10.0.0.1:50600"]
    stats = net.lb.stats()
    assert stats["dropped"]["not_on_switch"] == 1 and stats["restored_connections"] == 1


def test_a_restarted_edge_rewrites_an_established_reply_from_its_reconnect_on_before_any_audit(net: Net) -> None:
    member = net.open("c1", 50700)
    ack_path(net, member, 50700)
    send(net, dict(net.lb.packet_counts(CLIENT_EDGE, {("10.0.0.1", 50700, VIP, 80): 3}, 2.0).messages))
    send(net, dict(net.lb.switch_down(CLIENT_EDGE, 5.0).messages))
    net.fab.restart(CLIENT_EDGE).switch.now = 6.0
    send(net, dict(net.lb.switch_connected(CLIENT_EDGE, 6.0).messages))
    back = net.fab.inject(member, net.reply(member, "c1", 50700, TCP_ACK))
    assert back.hosts == ["c1"] and back.to("c1")[0]["ipv4_src"] == VIP, "never the member's address: c1 would reset"
    assert ack_path(net, member, 50700) == [CLIENT_EDGE, CORE_A, BACKEND_EDGE], "no packet-in, no audit needed"


def test_a_master_again_after_being_slave_restores_nothing_it_knew_before(net: Net) -> None:
    member = net.open("c1", 50800)
    ack_path(net, member, 50800)
    send(net, dict(net.lb.packet_counts(CLIENT_EDGE, {("10.0.0.1", 50800, VIP, 80): 3}, 2.0).messages))
    net.lb.set_role(Role.SLAVE, 3.0)  # another master may end or move the connection meanwhile: we do not hear it
    net.lb.set_role(Role.MASTER, 4.0)
    restart_edge(net, 6.0)
    assert net.fab.connection_flows(CLIENT_EDGE, Table.CONNECTIONS) == [], (
        "nothing restored from before the role change"
    )
    stats = net.lb.stats()
    assert net.lb.connections() == [] and stats["restored_connections"] == 0
