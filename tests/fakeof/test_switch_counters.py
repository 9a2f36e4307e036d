"""Level-2 tests of ``switch_tracking: counters``: conntrack-pinned switch dispatch with no copy to the controller.

The switch picks and pins every connection itself and sends the controller nothing per connection; the controller
reads per-member counts from the packet counts of tables 6 and 8 (flow stats, on the switch sync tick), and a
draining member turns ``drained`` when its count reaches 0 or its entries counted nothing for ``idle_timeout``.
"""

from __future__ import annotations

from collections import Counter

from nlb_sdn.config import endpoint_id
from nlb_sdn.flows.pipeline import ENDPOINT_MASK, Priority, Table
from nlb_sdn.framework import ofproto_v1_3 as ofp
from tests.fakeof.switch import TCP_ACK, TCP_SYN, FlowEntry
from tests.fakeof.test_dispatch import BACKENDS, CLIENT_EDGE, MEMBER_PORT, Net, make_config

TCP_FIN, TCP_RST = 0x01, 0x04


def counters_net(**kwargs: object) -> Net:
    """VIP web dispatched by the switches, conntrack-pinned and tracked by counters."""
    return Net(make_config(pinning="conntrack", tracking="counters", **kwargs))  # type: ignore[arg-type]


def read_counts(net: Net, now: float) -> None:
    """What the switch sync tick does: every switch's tables 6 and 8, with packet counts, to the core."""
    for dpid, datapath in net.fab.dps.items():
        rows = [
            (entry.table_id, entry.priority, entry.cookie, entry.n_packets)
            for table in (Table.SWITCH_SELECT, Table.CT_FORWARD)
            for entry in datapath.switch.dump_flows(table)
        ]
        net.lb.switch_counts(dpid, rows, now)


def live(net: Net, member: str) -> int:
    """The member's live connections as drain sees them."""
    return int(net.lb.hl.live("web", member))


def test_the_switch_copies_nothing_and_the_weights_are_followed() -> None:
    net = counters_net()
    hosts: Counter[str] = Counter()
    for sport in range(40000, 40200):
        delivery = net.syn("c1", sport)
        assert not delivery.packet_ins and not delivery.stray
        [(host, pkt)] = delivery.delivered
        assert (pkt["ipv4_dst"], pkt["tcp_dst"]) == (net.ip(host), MEMBER_PORT)
        hosts[host] += 1
        for flags in (TCP_ACK, TCP_ACK | TCP_FIN):
            assert not net.syn("c1", sport, flags).packet_ins
    assert net.lb.stats()["packet_in"] == {}
    assert net.lb.connections() == [], "nothing per connection in the controller"
    for host, weight in zip(BACKENDS, (0.40, 0.35, 0.25), strict=True):
        assert abs(hosts[host] / 200 - weight) < 0.08, hosts


def test_counts_follow_started_and_ended_connections() -> None:
    net = counters_net()
    members = {sport: net.syn("c1", sport).hosts[0] for sport in range(41000, 41030)}
    read_counts(net, 1.0)
    opened = Counter(members.values())
    assert {host: live(net, host) for host in BACKENDS} == {host: opened[host] for host in BACKENDS}
    assert net.lb.stats()["switch_dispatch"]["counted"] == {"web": {host: opened[host] for host in BACKENDS}}
    for sport in list(members)[:10]:
        net.syn("c1", sport, TCP_ACK | TCP_FIN)
    read_counts(net, 2.0)
    left = Counter(members[sport] for sport in list(members)[10:])
    assert {host: live(net, host) for host in BACKENDS} == {host: left[host] for host in BACKENDS}


def test_a_draining_member_turns_drained_when_its_connections_end() -> None:
    net = counters_net()
    pinned = [sport for sport in range(42000, 42100) if net.syn("c1", sport).hosts == ["h1"]]
    assert pinned
    net.apply(make_config(pinning="conntrack", tracking="counters", states={"h1": "draining"}))
    read_counts(net, 2.0)
    assert net.lb.member_state("web", "h1")["current"] == "draining"
    assert all(net.syn("c2", sport).hosts != ["h1"] for sport in range(43000, 43050)), "no new connection"
    for sport in pinned:
        assert net.syn("c1", sport, TCP_ACK | TCP_FIN).hosts == ["h1"], "its own connections stay"
    read_counts(net, 3.0)
    assert net.lb.member_state("web", "h1")["current"] == "drained"


def test_a_draining_member_whose_ends_were_not_counted_turns_drained_once_idle() -> None:
    net = counters_net()
    pinned = [sport for sport in range(42000, 42100) if net.syn("c1", sport).hosts == ["h1"]]
    net.apply(make_config(pinning="conntrack", tracking="counters", states={"h1": "draining"}))
    idle = net.lb.config.vip("web").idle_timeout
    read_counts(net, 2.0)
    net.syn("c1", pinned[0], TCP_ACK)  # still in use
    read_counts(net, 2.0 + idle - 1)
    assert net.lb.member_state("web", "h1")["current"] == "draining"
    read_counts(net, 2.0 + 2 * idle)
    assert live(net, "h1") == 0 and net.lb.member_state("web", "h1")["current"] == "drained"


def copies(entry: FlowEntry) -> bool:
    """Whether an entry sends the controller a copy of what it matches."""
    actions = [action for instruction in entry.instructions for action in getattr(instruction, "actions", [])]
    return any(getattr(action, "port", None) == ofp.OFPP_CONTROLLER for action in actions)


def end_entries(net: Net) -> list[FlowEntry]:
    """The members' FIN and RST entries of table 8 on the client edge."""
    return [e for e in net.fab.dps[CLIENT_EDGE].switch.dump_flows(Table.CT_FORWARD) if e.priority == Priority.CT_END]


def test_a_member_shared_with_a_copies_vip_keeps_copying_its_ends() -> None:
    alone = counters_net()
    assert end_entries(alone) and not any(copies(e) for e in end_entries(alone)), "counters alone: nothing copied"
    config = make_config(pinning="conntrack", tracking="counters")
    data = config.model_dump(mode="json", exclude_none=True)
    other = {**data["vips"][0], "name": "api", "port": 81, "switch_tracking": "copies"}
    other.pop("mac", None)
    data["vips"].append(other)
    net = Net(type(config).model_validate(data))
    ends = end_entries(net)
    assert ends and all(copies(e) for e in ends), "the members' FIN/RST entries copy for the copies VIP"
    assert {endpoint_id(net.ip(h), MEMBER_PORT) for h in BACKENDS} <= {e.cookie & ENDPOINT_MASK for e in ends}


def test_a_syn_retransmitted_is_not_counted_twice() -> None:
    net = counters_net()
    [member] = net.syn("c1", 44000).hosts
    assert net.syn("c1", 44000, TCP_SYN).hosts == [member]
    read_counts(net, 1.0)
    assert live(net, member) == 1
    net.syn("c1", 44000, TCP_RST)
    read_counts(net, 2.0)
    assert live(net, member) == 0
