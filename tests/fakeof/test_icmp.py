"""Level-2 tests of ICMP for VIPs (``vips[].icmp``) on the four-switch fake fabric: ping answered by the controller,
and ICMP errors of nat connections relayed with the NAT undone, under controller and switch (conntrack) dispatch.

c2 stands in for a router on the client's side: a member's reply to c1 it cannot forward (fragmentation needed, the
path MTU) comes back from it to the VIP, quoting the VIP -> c1 packet.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest

from nlb_sdn.config import Config, dump_config, parse_config, vip_mac
from nlb_sdn.core.frames import internet_checksum
from nlb_sdn.flows.icmp import ICMP_MAX_LEN
from nlb_sdn.flows.pipeline import Priority, Table
from tests.fakeof.fabric import CoreNet
from tests.fakeof.switch import make_packet
from tests.lib.configs import topo_config
from tests.lib.icmp import echo_request, frag_needed, port_unreachable, quoted_tcp, tcp_checksum_ok
from topologies import FabricTopo

VIP = "10.0.0.100"
VIP_MAC = vip_mac(VIP)
MEMBER_PORT = 8080
CLIENT_EDGE, BACKEND_EDGE = 1, 2
ICMP = 1
ON = {"answer_ping": True, "relay_errors": True}
OFF = {"answer_ping": False, "relay_errors": False}


def make_config(icmp: dict[str, Any] | None = None, dispatch: str = "controller") -> Config:
    """VIP web (10.0.0.100:80 -> h1..h3:8080) on FabricTopo, with ``icmp`` settings over both switched off."""
    topo = FabricTopo()
    vip: dict[str, Any] = {
        "name": "web",
        "address": VIP,
        "port": 80,
        "dispatch": dispatch,
        "members": [{"name": n, "address": topo.host_ip(n), "port": MEMBER_PORT} for n in ("h1", "h2", "h3")],
    }
    if dispatch == "switch":
        vip["switch_pinning"] = "conntrack"
    vip["icmp"] = {**OFF, **(icmp or {})}
    return topo_config(topo, [vip])


def icmp_entries(net: CoreNet, dpid: int = CLIENT_EDGE) -> list[Any]:
    """The ICMP punt entries of a switch's table 0."""
    return [e for e in net.fab.dps[dpid].switch.dump_flows(Table.CLASSIFY) if e.priority == Priority.ICMP]


class Net(CoreNet):
    """The core, the fake fabric, and ICMP packets between its hosts and the VIP."""

    def icmp(self, src: str, dst_mac: str, src_ip: str, dst_ip: str, message: bytes) -> dict[str, Any]:
        """An ICMP packet from host ``src``."""
        return make_packet(
            eth_src=self.mac(src), eth_dst=dst_mac, ipv4_src=src_ip, ipv4_dst=dst_ip, ip_proto=ICMP, payload=message
        )

    def connect(self, client: str, sport: int) -> str:
        """A connection from ``client`` to the VIP (through the controller, or pinned by conntrack); its member."""
        first, after = self.fab.run(self.lb, client, self.to_vip(client, sport), now=1.0)
        return (after.hosts or first.hosts)[0]


@pytest.fixture
def net() -> Net:
    return Net(make_config(ON))


def quoted_of(pkt: dict[str, Any]) -> tuple[str, int, str, int]:
    """The 4-tuple an ICMP error packet dict quotes."""
    quoted = pkt["payload"][8:]
    src, dst = ".".join(map(str, quoted[12:16])), ".".join(map(str, quoted[16:20]))
    sport, dport = struct.unpack_from("!HH", quoted, 20)
    return src, sport, dst, dport


def test_ping_to_the_vip_is_answered_from_the_vip(net: Net) -> None:
    request = net.icmp("c1", VIP_MAC, net.ip("c1"), VIP, echo_request(ident=5, seq=2))
    first, after = net.fab.run(net.lb, "c1", request, now=1.0)
    [(_dpid, punt)] = first.packet_ins
    assert punt.table_id == Table.CLASSIFY and not first.delivered
    [reply] = after.to("c1")
    assert (reply["eth_src"], reply["eth_dst"], reply["ipv4_src"], reply["ipv4_dst"]) == (
        VIP_MAC,
        net.mac("c1"),
        VIP,
        net.ip("c1"),
    )
    message = reply["payload"]
    assert message[0] == 0 and message[4:] == request["payload"][4:] and internet_checksum(message) == 0
    assert net.lb.stats()["packet_in"] == {"total": 1, "icmp_echo": 1}


def test_switched_off_icmp_to_the_vip_drops_at_the_switch() -> None:
    net = Net(make_config())
    request = net.icmp("c1", VIP_MAC, net.ip("c1"), VIP, echo_request())
    assert net.fab.inject("c1", request).nothing
    assert not icmp_entries(net)


@pytest.mark.parametrize("dispatch", ["controller", "switch"])
def test_fragmentation_needed_to_the_vip_reaches_the_member_quoting_its_own_packet(dispatch: str) -> None:
    net = Net(make_config(ON, dispatch))
    member = net.connect("c1", 40000)
    quoted = quoted_tcp(VIP, net.ip("c1"), 80, 40000, payload=b"d" * 64, whole=True)
    error = net.icmp("c2", VIP_MAC, net.ip("c2"), VIP, frag_needed(quoted, mtu=1400))
    first, after = net.fab.run(net.lb, "c2", error, now=2.0)
    assert len(first.packet_ins) == 1 and not first.delivered
    [(host, got)] = after.delivered
    assert host == member
    assert (got["eth_dst"], got["ipv4_src"], got["ipv4_dst"]) == (net.mac(member), net.ip("c2"), net.ip(member))
    assert quoted_of(got) == (net.ip(member), MEMBER_PORT, net.ip("c1"), 40000)
    message = got["payload"]
    assert internet_checksum(message) == 0 and struct.unpack_from("!H", message, 6)[0] == 1400
    assert tcp_checksum_ok(message[8:])
    assert net.lb.stats()["packet_in"]["icmp_error"] == 1


def test_an_error_a_member_sends_about_a_connection_reaches_the_client_from_the_vip(net: Net) -> None:
    member = net.connect("c1", 40001)
    quoted = quoted_tcp(net.ip("c1"), net.ip(member), 40001, MEMBER_PORT)
    error = net.icmp(member, net.mac("c1"), net.ip(member), net.ip("c1"), port_unreachable(quoted))
    _first, after = net.fab.run(net.lb, member, error, now=2.0)
    [got] = after.to("c1")
    assert (got["eth_src"], got["ipv4_src"], got["ipv4_dst"]) == (VIP_MAC, VIP, net.ip("c1"))
    assert quoted_of(got) == (net.ip("c1"), 40001, VIP, 80)
    assert internet_checksum(got["payload"]) == 0


def test_an_error_a_member_sends_about_direct_traffic_goes_on_unchanged(net: Net) -> None:
    quoted = quoted_tcp(net.ip("c1"), net.ip("h1"), 40002, 22)
    error = net.icmp("h1", net.mac("c1"), net.ip("h1"), net.ip("c1"), port_unreachable(quoted))
    _first, after = net.fab.run(net.lb, "h1", error, now=2.0)
    [got] = after.to("c1")
    assert got == {k: v for k, v in error.items() if k != "in_port"}
    assert net.lb.stats()["packet_in"]["icmp_passed"] == 1


def test_an_error_to_the_vip_about_no_connection_is_dropped(net: Net) -> None:
    quoted = quoted_tcp(VIP, net.ip("c1"), 80, 40003)
    error = net.icmp("c2", VIP_MAC, net.ip("c2"), VIP, frag_needed(quoted))
    _first, after = net.fab.run(net.lb, "c2", error, now=2.0)
    assert after.nothing
    assert net.lb.stats()["dropped"] == {"icmp_no_connection": 1}


def test_icmp_entries_come_and_go_with_the_settings() -> None:
    net = Net(make_config())
    data = dump_config(make_config({"answer_ping": True}))
    net.fab.send_all(net.lb.apply_config(parse_config(data), dpids=list(net.fab.dps)))
    [entry] = icmp_entries(net)
    assert entry.match["ipv4_dst"] == VIP and entry.match["icmpv4_type"] == 8
    assert entry.instructions[1].actions[0].max_len == ICMP_MAX_LEN
    request = net.icmp("c1", VIP_MAC, net.ip("c1"), VIP, echo_request())
    assert net.fab.run(net.lb, "c1", request, now=1.0)[1].hosts == ["c1"]
    net.fab.send_all(net.lb.apply_config(make_config(ON), dpids=list(net.fab.dps)))
    assert len(icmp_entries(net)) == 1 + 3  # echo, 3 error types to the VIP
    assert len(icmp_entries(net, BACKEND_EDGE)) == 1 + 3 + 3 * 3  # and from each member, on the members' edge only
    net.fab.send_all(net.lb.apply_config(make_config(), dpids=list(net.fab.dps)))
    assert not icmp_entries(net)
    assert net.fab.inject("c1", request).nothing
