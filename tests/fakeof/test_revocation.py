"""Level-2 tests of sessions following health (issue 11 item 5) on the fake fabric's flow tables.

A switch-dispatched VIP with client_ip affinity and learn pinning: the switch pins a whole client to one member with a
learned per-client entry, and each connection with its own entries. When that member fails, the controller deletes
those entries, so the client's next connection, even from a reused port, goes through the group to a live member.
"""

from __future__ import annotations

from typing import Any

from nlb_sdn.config import Config
from nlb_sdn.flows.pipeline import CookieKind, Table
from tests.fakeof.fabric import CoreNet
from tests.fakeof.switch import TCP_ACK, TCP_SYN
from tests.lib.configs import topo_config
from tests.lib.core import probe_tick
from topologies import FabricTopo

BACKENDS = ("h1", "h2", "h3")
CLIENT_EDGE = 1


def make_config(dispatch: str = "switch", granularity: str = "connection") -> Config:
    """VIP web (10.0.0.100:80 -> h1..h3:8080), client_ip affinity, members probed by the controller."""
    topo = FabricTopo()
    vip = {
        "name": "web",
        "address": "10.0.0.100",
        "port": 80,
        "dispatch": dispatch,
        "affinity": "client_ip",
        "granularity": granularity,
        "switch_pinning": "learn",
        "members": [
            {"name": name, "address": topo.host_ip(name), "port": 8080, "health": "probe"} for name in BACKENDS
        ],
    }
    return topo_config(topo, [vip])


class Net(CoreNet):
    """The core and the fake fabric, with members that answer probes until they fail."""

    def tick(self, now: float, down: tuple[str, ...] = ()) -> None:
        """The timer (probes answered except by ``down``), its messages and the group updates sent to the switches."""
        self.fab.send_all(probe_tick(self.lb, now, down, self.fab.dps))
        self.fab.send_all(self.lb.dispatch_updates(now, self.fab.dps))

    def send(self, client: str, sport: int, flags: int = TCP_SYN, now: float = 11.0) -> list[str]:
        """A segment from ``client`` to the VIP (through the controller when it punts); the hosts it reached."""
        first, after = self.fab.run(self.lb, client, self.to_vip(client, sport, flags), now)
        return first.hosts + after.hosts

    def pins(self, endpoint_id: int) -> list[Any]:
        """Entries of the client edge that still send to the member with ``endpoint_id`` (learned or per session)."""
        tables = (Table.CONNECTIONS, Table.REVERSE, Table.SWITCH_CONNECTIONS, Table.SWITCH_REVERSE)
        switch = self.fab.dps[CLIENT_EDGE].switch
        return [
            entry
            for table in tables
            for entry in switch.dump_flows(table)
            if entry.cookie >> 56 in (CookieKind.NAT, CookieKind.SESSION) and entry.cookie & 0xFFFFFFFF == endpoint_id
        ]


def failover(net: Net) -> tuple[str, list[str]]:
    """c1 opens connections (pinned to one member), the member fails; the member and where c1's next SYNs go."""
    net.tick(10.0)
    [member] = {host for sport in range(40000, 40010) for host in net.send("c1", sport)}
    assert net.send("c1", 40000, TCP_ACK) == [member]
    endpoint = net.lb.config.vip("web").member(member).endpoint_id
    assert net.pins(endpoint)
    for now in (11.1, 12.2, 13.3):
        net.tick(now, down=(member,))
    assert net.lb.health.prober.health("web", member) == "failed"
    assert not net.pins(endpoint), "every entry pinning c1 to the failed member is gone"
    reached = [host for sport in (40000, 40005, 41000, 41001) for host in net.send("c1", sport, now=13.4)]
    return member, reached


def test_switch_pinned_client_and_reused_ports_leave_a_failed_member_at_once() -> None:
    member, reached = failover(Net(make_config()))
    assert len(reached) == 4 and member not in reached, reached
    assert len(set(reached)) == 1, "the client is pinned again, to one live member"


def test_per_session_flows_of_a_failed_member_are_deleted_and_the_client_chosen_again() -> None:
    member, reached = failover(Net(make_config(dispatch="controller", granularity="session")))
    assert len(reached) == 4 and member not in reached, reached
