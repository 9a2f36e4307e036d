"""A new connection from a reused client port (controller dispatch, nat) on the fake fabric: it stays on the ended
connection's member while that member may take it, so the switch's cached datapath flow of the ended connection,
which Open vSwitch re-checks only a few ms after the entry is replaced, sends its first segments where the new entry
does (issue 14 item 0); and the ended connection's leftover entry toward another member never takes the new one down.
"""

from __future__ import annotations

from typing import Any

from nlb_sdn.config import Config, dump_config, parse_config
from nlb_sdn.flows.pipeline import Table
from tests.fakeof.fabric import CoreNet, reason_name
from tests.fakeof.switch import TCP_ACK, TCP_SYN
from tests.lib.configs import topo_config
from topologies import FabricTopo

CLIENT_EDGE = 1
MEMBER_PORT = 8080
IDLE = 15
FIRST_SEQ, SECOND_SEQ = 0x1000, 0x2001  # different low bytes: a new connection, not a retransmitted SYN


def make_config(affinity: str = "none") -> Config:
    """VIP web (10.0.0.100:80) over h1..h3:8080 with equal weights: the allotment never picks one member twice in a
    row."""
    topo = FabricTopo()
    vip = {
        "name": "web",
        "address": "10.0.0.100",
        "port": 80,
        "idle_timeout": IDLE,
        "affinity": affinity,
        "members": topo.members(port=MEMBER_PORT),
    }
    return topo_config(topo, [vip])


def syn(net: CoreNet, sport: int, seq: int, now: float) -> list[str]:
    """Send a SYN from c1's port ``sport`` with sequence number ``seq`` through the controller; the hosts reached."""
    net.fab.clock(now)
    packet: dict[str, Any] = net.to_vip("c1", sport, TCP_SYN) | {"tcp_seq": seq}
    first, after = net.fab.run(net.lb, "c1", packet, now)
    assert len(first.packet_ins) == 1 and not first.delivered
    return after.hosts


def client_segment_reaches(net: CoreNet, sport: int) -> list[str]:
    """Where c1's next ACK on ``sport`` goes through the switches' entries."""
    return net.fab.inject("c1", net.to_vip("c1", sport, TCP_ACK)).hosts


def forward_actions(net: CoreNet, sport: int) -> str:
    """The instructions of the client edge's table-1 entry of c1's connection on ``sport``: what a datapath flow
    cached from it does."""
    [entry] = [e for e in net.fab.connection_flows(CLIENT_EDGE, Table.CONNECTIONS) if e.match["tcp_src"] == sport]
    return repr(entry.instructions)


def set_state(net: CoreNet, member: str, state: str) -> None:
    """Change one member's state in the running config."""
    data = dump_config(net.lb.config)
    for entry in data["vips"][0]["members"]:
        if entry["name"] == member:
            entry["state"] = state
    net.fab.send_all(net.lb.apply_config(parse_config(data), dpids=list(net.fab.dps)))


def test_a_new_connection_on_a_reused_port_stays_on_the_ended_connections_member() -> None:
    net = CoreNet(make_config())
    [member] = syn(net, 45000, FIRST_SEQ, now=0.0)
    before = forward_actions(net, 45000)
    assert syn(net, 45001, FIRST_SEQ, now=0.5) != [member], "the allotment moves on to another member"
    assert syn(net, 45000, SECOND_SEQ, now=1.0) == [member]
    assert forward_actions(net, 45000) == before, "a flow cached from the ended connection's entry still fits"
    assert client_segment_reaches(net, 45000) == [member]
    counters = net.lb.stats()["packet_in"]
    assert counters["port_reuse"] == 1 and counters["port_reuse_same_member"] == 1
    assert {c["client"]: c["member"] for c in net.lb.connections()}[f"{net.ip('c1')}:45000"] == member


def test_a_reused_port_whose_member_was_drained_is_balanced_again() -> None:
    net = CoreNet(make_config())
    [member] = syn(net, 46000, FIRST_SEQ, now=0.0)
    set_state(net, member, "draining")
    [other] = syn(net, 46000, SECOND_SEQ, now=1.0)
    assert other != member
    assert client_segment_reaches(net, 46000) == [other]
    assert "port_reuse_same_member" not in net.lb.stats()["packet_in"]


def test_with_client_affinity_the_session_not_the_ended_connection_decides() -> None:
    net = CoreNet(make_config(affinity="client_ip"))
    [member] = syn(net, 47000, FIRST_SEQ, now=0.0)
    assert syn(net, 47000, SECOND_SEQ, now=1.0) == [member], "the client's session"
    counters = net.lb.stats()["packet_in"]
    assert counters["port_reuse"] == 1 and "port_reuse_same_member" not in counters


def test_the_ended_connections_entry_toward_another_member_idling_out_leaves_the_new_connection_alone() -> None:
    net = CoreNet(make_config())
    [member] = syn(net, 48000, FIRST_SEQ, now=0.0)
    set_state(net, member, "draining")
    [other] = syn(net, 48000, SECOND_SEQ, now=10.0)
    assert client_segment_reaches(net, 48000) == [other]
    # The ended connection's reverse entry (member -> client) was not replaced: it idles out first.
    removed = net.fab.expire(IDLE + 1.0)
    assert [(msg.table_id, reason_name(msg.reason)) for _, msg in removed] == [(Table.REVERSE, "idle")]
    assert net.fab.flow_removed_to(net.lb, removed).nothing, "no delete of the new connection's entries"
    assert [c["member"] for c in net.lb.connections()] == [other]
    assert client_segment_reaches(net, 48000) == [other]
    assert net.lb.stats()["dropped"]["flow_removed_other_member"] == 1
