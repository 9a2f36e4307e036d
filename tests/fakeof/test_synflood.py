"""SYN-flood protection on the fake fabric: half-open entries idle out fast, real connections re-plumb, meters drop."""

from __future__ import annotations

from typing import Any

from nlb_sdn.flows.pipeline import Table
from tests.fakeof.fabric import WEB_VIP, CoreNet, Delivery, reason_name
from tests.fakeof.switch import TCP_ACK, TCP_SYN, tcp_packet
from tests.lib.configs import topo_config
from topologies import FabricTopo

CLIENT_EDGE = 1
MEMBER_PORT = 8080
HALF_OPEN = 3
VIP_SYN_RATE = 40


def flood_net(**flood: Any) -> CoreNet:
    """VIP web (10.0.0.100:80 → h1..h3:8080) on FabricTopo with a ``controller.flood`` section, installed."""
    topo = FabricTopo()
    members = [{"name": h, "address": topo.host_ip(h), "port": MEMBER_PORT} for h in ("h1", "h2", "h3")]
    vips = [{"name": "web", "address": WEB_VIP, "port": 80, "members": members}]
    return CoreNet(topo_config(topo, vips, flood=flood))


def removed_to_core(net: CoreNet, now: float) -> Delivery:
    """Expire the switches' entries at ``now`` and hand the flow-removed messages to the core at that time."""
    result = Delivery()
    for dpid, msg in net.fab.expire(now):
        msgs = net.lb.handle_flow_removed(dpid, msg.table_id, msg.cookie, dict(msg.match.items()), idle=True, now=now)
        result.extend(net.fab.send(dpid, msgs))
    return result


def reply(net: CoreNet, member: str, flags: int) -> dict[str, Any]:
    """A segment ``member`` sends back to c1's port 47000."""
    return tcp_packet(net.mac(member), net.mac("c1"), net.ip(member), net.ip("c1"), MEMBER_PORT, 47000, flags)


def test_a_spoofed_syn_leaves_nothing_after_the_half_open_timeout() -> None:
    net = flood_net(half_open_idle=HALF_OPEN)
    net.open("c1", 47000, now=100.0)  # nobody answers the member's SYN-ACK: the client address was spoofed
    assert [e.idle_timeout for e in net.fab.connection_flows(CLIENT_EDGE, Table.CONNECTIONS)] == [HALF_OPEN]
    assert net.fab.expire(102.9) == []
    assert removed_to_core(net, 103.0).nothing
    assert net.lb.connections() == []
    for dpid in net.fab.dps:
        assert not net.fab.connection_flows(dpid, Table.CONNECTIONS)
        assert not net.fab.connection_flows(dpid, Table.REVERSE)


def test_a_real_connection_idle_past_the_half_open_timeout_is_re_plumbed_to_its_member_with_the_full_timeout() -> None:
    net = flood_net(half_open_idle=HALF_OPEN)
    member = net.open("c1", 47000, now=100.0)
    net.fab.clock(100.5)
    assert net.fab.inject(member, reply(net, member, TCP_SYN | TCP_ACK)).hosts == ["c1"]
    assert net.fab.inject("c1", net.to_vip("c1", 47000, TCP_ACK)).hosts == [member]  # the handshake's ACK
    net.fab.clock(103.0)
    assert net.fab.inject("c1", net.to_vip("c1", 47000, TCP_ACK)).hosts == [member], "its segments keep it alive"
    assert net.fab.inject(member, reply(net, member, TCP_ACK)).hosts == ["c1"]
    assert net.fab.expire(105.9) == []
    follow_up = removed_to_core(net, 106.0)
    assert follow_up.nothing and net.lb.connections() == []
    # Idle past the short timeout: the next segment is punted once and re-plumbed from the lingering route.
    first, after = net.fab.run(net.lb, "c1", net.to_vip("c1", 47000, TCP_ACK), now=130.0)
    assert [pi.table_id for _, pi in first.packet_ins] == [Table.SWITCH_CONNECTIONS]
    assert after.hosts == [member]
    assert [e.idle_timeout for e in net.fab.connection_flows(CLIENT_EDGE, Table.CONNECTIONS)] == [15]
    assert net.lb.stats()["packet_in"]["replumb"] == 1
    # From now on it bypasses the controller, both ways, for the VIP's full idle timeout.
    net.fab.clock(140.0)
    assert net.fab.inject("c1", net.to_vip("c1", 47000, TCP_ACK)).hosts == [member]
    back = net.fab.inject(member, reply(net, member, TCP_ACK))
    assert back.hosts == ["c1"] and back.to("c1")[0]["ipv4_src"] == WEB_VIP
    assert net.fab.expire(154.9) == []
    assert sorted(reason_name(msg.reason) for _, msg in net.fab.expire(155.0)) == ["idle", "idle"]


def test_the_vip_meter_bounds_the_syns_a_switch_punts() -> None:
    net = flood_net(vip_syn_rate=VIP_SYN_RATE)
    net.fab.clock(10.0)
    punted = sum(len(net.fab.inject("c1", net.to_vip("c1", port)).packet_ins) for port in range(20000, 20100))
    assert punted == VIP_SYN_RATE // 4, "a burst of a quarter second of the rate, then nothing"
    net.fab.clock(11.0)  # a second later the meter has refilled
    later = net.fab.inject("c1", net.to_vip("c1", 30000, TCP_SYN))
    assert len(later.packet_ins) == 1


def restart_edge(net: CoreNet, down: float, now: float) -> None:
    """The client edge's channel closes at ``down``; it comes back at ``now`` with empty tables and is reconciled."""
    net.fab.send_all(dict(net.lb.switch_down(CLIENT_EDGE, down).messages))
    fresh = net.fab.restart(CLIENT_EDGE)
    fresh.switch.now = now
    net.fab.send(CLIENT_EDGE, net.lb.switch_connected(CLIENT_EDGE, now).to(CLIENT_EDGE))
    stats = [(e.table_id, e.priority, e.match, e.cookie) for e in fresh.switch.dump_flows()]
    net.fab.send(CLIENT_EDGE, net.lb.reconcile(CLIENT_EDGE, stats, now, after_connect=True))


def test_a_restarted_edge_gets_back_a_connection_that_outlived_the_half_open_idle_but_not_a_younger_one() -> None:
    net = flood_net(half_open_idle=HALF_OPEN)
    member = net.open("c1", 47000, now=100.0)
    net.fab.clock(101.0)
    assert net.fab.inject("c1", net.to_vip("c1", 47000, TCP_ACK)).hosts == [member]  # the handshake's ACK
    net.open("c2", 47001, now=105.0)  # its entries have not outlived the half-open idle when the switch goes down
    restart_edge(net, 106.0, 110.0)
    [entry] = net.fab.connection_flows(CLIENT_EDGE, Table.CONNECTIONS)
    assert entry.match["tcp_src"] == 47000 and entry.idle_timeout > HALF_OPEN, "re-plumbed with the full timeout"
    went = net.fab.inject("c1", net.to_vip("c1", 47000, TCP_ACK))
    assert went.hosts == [member] and not went.packet_ins
    assert [conn["client"] for conn in net.lb.connections()] == [f"{net.ip('c1')}:47000"]


def test_a_restarted_edge_gets_back_a_connection_a_late_segment_re_plumbed() -> None:
    net = flood_net()  # no half-open idle: only the re-plumb shows that the connection went on
    member = net.open("c1", 47000, now=100.0)
    [entry] = net.fab.connection_flows(CLIENT_EDGE, Table.CONNECTIONS)
    idled = 100.0 + entry.idle_timeout
    removed_to_core(net, idled)
    assert net.lb.connections() == []
    late = net.fab.run(net.lb, "c1", net.to_vip("c1", 47000, TCP_ACK), idled + 1)
    assert late[1].hosts == [member], "the late segment re-plumbed the route"
    net.open("c2", 47001, now=idled + 1)  # never confirmed
    restart_edge(net, idled + 2, idled + 3)
    [entry] = net.fab.connection_flows(CLIENT_EDGE, Table.CONNECTIONS)
    assert entry.match["tcp_src"] == 47000, "the re-plumbed connection is back, the unconfirmed one is gone"
    assert net.fab.inject("c1", net.to_vip("c1", 47000, TCP_ACK)).hosts == [member]
