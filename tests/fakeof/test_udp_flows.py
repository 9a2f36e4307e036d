"""Level-2 tests of UDP VIP services (``protocol: udp``) on the four-switch fake fabric, in both dispatch modes.

A UDP flow is the 5-tuple of its datagrams. Under controller dispatch its first datagram is punted (one packet-in per
flow), the flow's two entries rewrite the rest, and it ends when they idle out; under switch dispatch the select group
picks the member and the switch pins the flow itself (learned entries, or the tracker), with no packet-in on the path.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from nlb_sdn.config import Config, parse_config, vip_mac
from nlb_sdn.flows.pipeline import Priority, Table
from tests.fakeof.fabric import CoreNet, Delivery
from tests.fakeof.switch import TCP_SYN, make_packet
from tests.lib.configs import topo_config
from topologies import FabricTopo

VIP = "10.0.0.100"
VIP_MAC = vip_mac(VIP)
DNS_PORT = 53
MEMBER_PORT = 5353
CLIENT_EDGE = 1
BACKENDS = ("h1", "h2", "h3")


def make_config(weights: tuple[int, ...] = (1, 1, 2), tcp_web: bool = False, **vip: Any) -> Config:
    """VIP dns (10.0.0.100:53/udp -> h1..h3:5353, weights) on FabricTopo; ``vip``: more VIP fields."""
    topo = FabricTopo()
    vips: list[dict[str, Any]] = [
        {
            "name": "dns",
            "address": VIP,
            "port": DNS_PORT,
            "protocol": "udp",
            "members": [
                {"name": name, "address": topo.host_ip(name), "port": MEMBER_PORT, "weight": weight}
                for name, weight in zip(BACKENDS, weights, strict=True)
            ],
            **vip,
        }
    ]
    if tcp_web:
        vips.append(
            {
                "name": "web",
                "address": VIP,
                "port": 80,
                "members": [{"name": "h1", "address": topo.host_ip("h1"), "port": 8080}],
            }
        )
    return topo_config(topo, vips)


class Net(CoreNet):
    """The core, the fabric it drives, and UDP datagrams both ways."""

    def query(self, client: str, sport: int, payload: bytes = b"q", vport: int = DNS_PORT) -> dict[str, Any]:
        """A datagram from ``client`` to the VIP (sent to the VIP's MAC, as after ARP)."""
        return make_packet(
            eth_src=self.mac(client),
            eth_dst=VIP_MAC,
            ipv4_src=self.ip(client),
            ipv4_dst=VIP,
            udp_src=sport,
            udp_dst=vport,
            payload=payload,
        )

    def answer(self, member: str, client: str, cport: int) -> dict[str, Any]:
        """A datagram a member sends back to a client (straight to the client's MAC and address)."""
        return make_packet(
            eth_src=self.mac(member),
            eth_dst=self.mac(client),
            ipv4_src=self.ip(member),
            ipv4_dst=self.ip(client),
            udp_src=MEMBER_PORT,
            udp_dst=cport,
            payload=b"a",
        )

    def send(self, client: str, sport: int, now: float = 1.0) -> tuple[Delivery, Delivery]:
        """A datagram through the fabric with the controller answering its packet-ins: (first pass, after)."""
        self.fab.clock(now)
        return self.fab.run(self.lb, client, self.query(client, sport), now)

    def apply(self, config: Config, now: float = 1.0) -> None:
        """A config change, sent to every switch."""
        self.fab.send_all(self.lb.apply_config(config, self.fab.dps, now))


@pytest.fixture
def net() -> Net:
    return Net(make_config())


def member_of(net: Net, client: str, sport: int, now: float = 1.0) -> str:
    """Send a flow's first datagram through the controller: the member it reached (exactly one packet-in)."""
    first, after = net.send(client, sport, now)
    assert len(first.packet_ins) == 1 and not first.delivered
    [(host, pkt)] = after.delivered
    assert (pkt["ipv4_dst"], pkt["udp_dst"], pkt["eth_dst"]) == (net.ip(host), MEMBER_PORT, net.mac(host))
    assert pkt["payload"] == b"q"
    return host


# -- controller dispatch -----------------------------------------------------------------------------------------------


def test_a_flow_costs_one_packet_in_and_its_later_datagrams_and_answers_bypass_the_controller(net: Net) -> None:
    host = member_of(net, "c1", 40000)
    for _ in range(3):
        later = net.fab.inject("c1", net.query("c1", 40000))
        assert later.hosts == [host] and not later.packet_ins
    back = net.fab.inject(host, net.answer(host, "c1", 40000))
    [(client, got)] = back.delivered
    assert client == "c1" and (got["eth_src"], got["ipv4_src"], got["udp_src"]) == (VIP_MAC, VIP, DNS_PORT)
    assert not back.packet_ins
    [row] = net.lb.connections()
    assert (row["client"], row["member"], row["vip_address"]) == (f"{net.ip('c1')}:40000", host, f"{VIP}:53")
    assert net.lb.stats()["packet_in"]["new_connection"] == 1


def test_400_flows_reach_the_members_exactly_by_weight(net: Net) -> None:
    reached = Counter(member_of(net, ("c1", "c2", "c3")[i % 3], 20000 + i) for i in range(400))
    assert reached == {"h1": 100, "h2": 100, "h3": 200}
    assert len(net.fab.connection_flows(CLIENT_EDGE, Table.CONNECTIONS)) == 400


def test_a_flow_stays_on_its_member_while_weights_change(net: Net) -> None:
    pinned = {sport: member_of(net, "c1", sport) for sport in range(41000, 41040)}
    assert len(set(pinned.values())) == 3
    net.apply(make_config(weights=(0, 0, 1)))
    for sport, host in pinned.items():
        later = net.fab.inject("c1", net.query("c1", sport))
        assert later.hosts == [host] and not later.packet_ins, "a running flow moved"
    assert {member_of(net, "c2", sport) for sport in range(41000, 41020)} == {"h3"}


def test_a_flow_ends_when_its_entries_idle_out_and_a_late_datagram_returns_to_its_member(net: Net) -> None:
    host = member_of(net, "c1", 42000, now=1.0)
    idle = net.lb.config.vip("dns").idle_timeout
    removed = net.fab.expire(1.0 + idle + 1)
    assert len(removed) == 2, "both directions idle out"
    net.fab.flow_removed_to(net.lb, removed)
    assert net.lb.connections() == []
    net.apply(make_config(weights=tuple(0 if name == host else 1 for name in BACKENDS)))
    first, after = net.send("c1", 42000, now=1.0 + idle + 2)
    assert len(first.packet_ins) == 1 and after.hosts == [host], "the lingering route brings it back"
    assert net.lb.stats()["packet_in"]["replumb"] == 1


def test_udp_flows_get_the_full_idle_timeout_at_once_and_no_handshake_check(net: Net) -> None:
    member_of(net, "c1", 43000)
    idle = net.lb.config.vip("dns").idle_timeout
    flows = net.fab.connection_flows(CLIENT_EDGE, Table.CONNECTIONS)
    assert [flow.idle_timeout for flow in flows] == [idle]
    assert net.lb.ctx.table.half_open == {}


def test_client_ip_affinity_keeps_a_clients_flows_on_one_member() -> None:
    net = Net(make_config(affinity="client_ip"))
    for client in ("c1", "c2", "c3"):
        assert len({member_of(net, client, sport) for sport in range(44000, 44010)}) == 1


def test_session_granularity_plumbs_one_flow_pair_per_client() -> None:
    net = Net(make_config(affinity="client_ip", granularity="session"))
    first = member_of(net, "c1", 45000)
    for sport in range(45001, 45010):
        later = net.fab.inject("c1", net.query("c1", sport))
        assert later.hosts == [first] and not later.packet_ins


def test_tcp_to_the_udp_port_and_udp_to_a_tcp_port_are_dropped_without_packet_in() -> None:
    net = Net(make_config(tcp_web=True))
    tcp = net.to_vip("c1", 46000, TCP_SYN, vport=DNS_PORT)
    udp = net.query("c1", 46000, vport=80)
    for pkt in (tcp, udp):
        went = net.fab.inject("c1", pkt)
        assert went.nothing, went.traces[0][1].log
    assert net.lb.stats()["packet_in"] == {}


def test_the_datagram_punt_ranks_below_the_flow_entries(net: Net) -> None:
    edge = net.fab.dps[CLIENT_EDGE].switch
    [punt] = [e for e in edge.dump_flows(Table.CONNECTIONS) if e.priority == Priority.VIP_DATAGRAM]
    assert punt.match["udp_dst"] == DNS_PORT and punt.priority < Priority.SESSION < Priority.CONNECTION


def test_a_tunnel_mode_udp_flow_carries_the_hosts_label() -> None:
    net = Net(
        parse_config(
            {
                **make_config().model_dump(mode="json"),
                "vips": [
                    {
                        "name": "dns",
                        "address": VIP,
                        "port": DNS_PORT,
                        "protocol": "udp",
                        "mode": "tunnel",
                        "members": [
                            {"name": name, "address": FabricTopo().host_ip(name), "port": DNS_PORT} for name in BACKENDS
                        ],
                    }
                ],
            }
        )
    )
    first, after = net.send("c1", 47000)
    assert len(first.packet_ins) == 1
    [(host, pkt)] = after.delivered
    assert (pkt["ipv4_dst"], pkt["udp_dst"]) == (VIP, DNS_PORT), "tunnel mode does not rewrite"
    later = net.fab.inject("c1", net.query("c1", 47000))
    assert later.hosts == [host] and not later.packet_ins


# -- switch dispatch ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pinning", ["learn", "conntrack"])
def test_the_switch_spreads_udp_flows_by_weight_and_pins_them(pinning: str) -> None:
    net = Net(make_config(weights=(40, 35, 25), dispatch="switch", switch_pinning=pinning))
    hosts: dict[int, str] = {}
    for sport in range(40000, 41000):
        first = net.fab.inject("c1", net.query("c1", sport))
        assert not first.stray
        [(host, pkt)] = first.delivered
        assert (pkt["ipv4_dst"], pkt["udp_dst"]) == (net.ip(host), MEMBER_PORT)
        hosts[sport] = host
        if pinning == "conntrack":
            assert [pi.table_id for _, pi in first.packet_ins] == [Table.SWITCH_SELECT], "a copy of the first only"
            copies_to_controller(net, first)
        else:
            assert not first.packet_ins
    shares = Counter(hosts.values())
    for host, weight in zip(BACKENDS, (0.40, 0.35, 0.25), strict=True):
        assert abs(shares[host] / 1000 - weight) < 0.05, shares
    net.apply(make_config(weights=(0, 0, 1), dispatch="switch", switch_pinning=pinning))
    for sport in range(40000, 40100):
        later = net.fab.inject("c1", net.query("c1", sport))
        assert later.hosts == [hosts[sport]] and not later.packet_ins, "a pinned flow moved or punted"
    member = hosts[40000]
    back = net.fab.inject(member, net.answer(member, "c1", 40000))
    [(client, got)] = back.delivered
    assert client == "c1" and (got["ipv4_src"], got["udp_src"]) == (VIP, DNS_PORT) and not back.packet_ins
    fresh = {net.fab.inject("c2", net.query("c2", sport)).hosts[0] for sport in range(40000, 40050)}
    assert fresh == {"h3"}


def copies_to_controller(net: Net, delivery: Delivery, now: float = 1.0) -> None:
    """Feed a delivery's packet-ins (the switch's copies) to the core, which answers nothing."""
    for dpid, packet_in in delivery.packet_ins:
        msg = packet_in.to_msg(net.fab.dps[dpid])
        answer = net.lb.handle_packet_in(
            dpid, msg.match["in_port"], msg.data, msg.total_len, msg.table_id, now, msg.cookie
        )
        assert answer == []


def test_a_conntrack_udp_flow_is_listed_from_its_copy_and_leaves_when_its_audit_entry_idles_out() -> None:
    net = Net(make_config(dispatch="switch", switch_pinning="conntrack"))
    first = net.fab.inject("c1", net.query("c1", 42000))
    copies_to_controller(net, first)
    [row] = net.lb.connections()
    assert (row["client"], row["dispatch"]) == (f"{net.ip('c1')}:42000", "switch")
    idle = net.lb.config.vip("dns").idle_timeout
    net.fab.clock(1.0 + idle)
    audits = net.lb.conntrack_audits(1.0 + idle)
    net.fab.send_all(audits)
    [audit] = [
        e for e in net.fab.dps[CLIENT_EDGE].switch.dump_flows(Table.CT_FORWARD) if e.priority == Priority.CT_AUDIT
    ]
    assert audit.match["udp_src"] == 42000
    removed = net.fab.expire(1.0 + 2 * idle + 1)
    net.fab.flow_removed_to(net.lb, removed)
    assert net.lb.connections() == []
    assert net.lb.stats()["switch_dispatch"]["counters"]["conntrack_audit_ended"] == 1


def test_a_learned_udp_flow_ends_when_its_learned_entries_idle_out() -> None:
    net = Net(make_config(dispatch="switch", switch_pinning="learn"))
    assert net.fab.inject("c1", net.query("c1", 42000)).hosts
    [forward] = net.fab.connection_flows(CLIENT_EDGE, Table.SWITCH_CONNECTIONS)
    assert forward.match["udp_src"] == 42000
    idle = net.lb.config.vip("dns").idle_timeout
    removed = net.fab.expire(1.0 + idle + 1)
    assert len(removed) == 2
    net.fab.flow_removed_to(net.lb, removed)
    assert net.lb.stats()["switch_dispatch"]["counters"]["connections_ended"] >= 1
