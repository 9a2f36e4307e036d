"""Two-tier lab fabric: client edge, backend edge and two core switches, so paths between edges matter."""

from __future__ import annotations

from topologies.base import FIRST_BACKEND, FIRST_CLIENT, FIRST_ROUTER, LabTopo

HOST_BASE_PORT = 3
ROUTER_BASE_PORT = HOST_BASE_PORT + FIRST_BACKEND - FIRST_CLIENT
"""Routers take s1 ports 13.. (after the ports of at most 10 clients)."""


class FabricTopo(LabTopo):
    """Edge s1 (clients), edge s2 (backends), cores s3 and s4 each linked to both edges; dpids 1..4.

    The graph has a loop (s1-s3-s2-s4-s1): nothing is ever flooded, the controller installs paths.
    ``sX:p`` is OpenFlow port p of switch sX; hosts use eth0; edge ports 1 and 2 are the uplinks::

                       s3:1 +--------+ s3:2
                .-----------|   s3   |-----------.
                |           | dpid 3 |           |
              s1:1          +--------+         s2:1
        +--------+                              +--------+
        |   s1   |                              |   s2   |
        | dpid 1 |                              | dpid 2 |
        +--------+                              +--------+
              s1:2          +--------+         s2:2
                |           |   s4   |           |
                '-----------| dpid 4 |-----------'
                       s4:1 +--------+ s4:2

        c1 10.0.0.1 --- s1:3                    s2:3 --- h1 10.0.0.11
        c2 10.0.0.2 --- s1:4                    s2:4 --- h2 10.0.0.12
        c3 10.0.0.3 --- s1:5                    s2:5 --- h3 10.0.0.13

    With ``routers=N``, request routers r1.. (10.0.0.91..) sit on the client edge s1, ports 13.. (FIG. 9A: the router
    beside its forwarder). Clients take s1 ports 3.., backends s2 ports 3..; MACs spell the last address byte in decimal
    (10.0.0.12 is 00:00:00:00:00:12).
    """

    def build(self) -> None:
        """Add the four switches, the four edge-core links and the hosts."""
        for name, dpid in (("s1", 1), ("s2", 2), ("s3", 3), ("s4", 4)):
            self.add_lab_switch(name, dpid)
        for core_port, edge in ((1, "s1"), (2, "s2")):
            self.add_trunk(edge, 1, "s3", core_port)
            self.add_trunk(edge, 2, "s4", core_port)
        for index, name in enumerate(self.clients):
            self.add_lab_host(name, FIRST_CLIENT + index, "s1", HOST_BASE_PORT + index)
        for index, name in enumerate(self.backends):
            self.add_lab_host(name, FIRST_BACKEND + index, "s2", HOST_BASE_PORT + index)
        for index, name in enumerate(self.routers):
            self.add_lab_host(name, FIRST_ROUTER + index, "s1", ROUTER_BASE_PORT + index)
