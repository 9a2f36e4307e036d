"""Path-MTU lab topology: the client sits behind a Linux router whose link toward it has a smaller MTU."""

from __future__ import annotations

from topologies.base import FIRST_BACKEND, FIRST_CLIENT, LabTopo

CLIENT_NET = "10.1.0."
"""The client's own subnet behind the router (outside the fabric's 10.0.0.0/24)."""
CLIENT_NET_PREFIX = 24
ROUTER = "g1"
ROUTER_CLIENT_SIDE = f"{CLIENT_NET}1"
SMALL_MTU = 1400
"""MTU of the router's interface toward the client: a member's full-size (1500) segments do not fit."""


class PmtuTopo(LabTopo):
    """One switch s1 (dpid 1); router g1 on s1:1, backends h1.. on s1:2..; client c1 behind g1, off the fabric.

    ``sX:p`` is OpenFlow port p of switch sX::

        c1 10.1.0.2 --- g1-eth1 10.1.0.1 (MTU 1400)
                        g1-eth0 10.0.0.1 --- s1:1         s1:2 --- h1 10.0.0.11
                                                          s1:3 --- h2 10.0.0.12

    c1 keeps MTU 1500, so it announces MSS 1460 and the members send full-size segments that g1 cannot forward: g1
    answers each with ICMP "fragmentation needed" (MTU 1400) to its source, the VIP. The backends route 10.1.0.0/24
    through g1 (their default route); g1 forwards only once the lab turns on ``net.ipv4.ip_forward`` (``router_up``).
    The fabric lists g1 and the backends, not c1.
    """

    def build(self) -> None:
        """Add s1, the router, the backends, and the client behind the router."""
        self.add_lab_switch("s1", 1)
        self.add_lab_host(ROUTER, FIRST_CLIENT, "s1", 1)
        router_ip = self.host_ip(ROUTER)
        for index, name in enumerate(self.backends):
            self.add_lab_host(name, FIRST_BACKEND + index, "s1", 2 + index)
            self._hosts[name]["defaultRoute"] = f"via {router_ip}"
        if len(self.clients) != 1:
            raise ValueError(f"the path-MTU lab has one client behind its router, got {len(self.clients)}")
        self._hosts["c1"] = {
            "ip": f"{CLIENT_NET}2/{CLIENT_NET_PREFIX}",
            "mac": "00:00:00:00:01:02",
            "defaultRoute": f"via {ROUTER_CLIENT_SIDE}",
        }
        self._add_link(
            "c1",
            0,
            ROUTER,
            1,
            params2={"ip": f"{ROUTER_CLIENT_SIDE}/{CLIENT_NET_PREFIX}", "ifconfig": f"mtu {SMALL_MTU}"},
        )
