"""Multi-hop lab topology: clients on two edge switches, one core switch, backends on two more edge switches."""

from __future__ import annotations

from topologies.base import FIRST_BACKEND, FIRST_CLIENT, LabTopo

CLIENT_EDGES = ("s1", "s2")
BACKEND_EDGES = ("s4", "s5")
CORE = "s3"
HOST_BASE_PORT = 2
"""Edge port 1 is the uplink to the core; hosts take ports 2.. of their edge."""


class MultiHopTopo(LabTopo):
    """Client edges s1, s2 and backend edges s4, s5, each linked to the core s3; dpids 1..5.

    Every client-to-backend path crosses three switches (edge, core, edge); the graph is a tree. Hosts alternate
    between the two edges of their side (c1, c3, ... on s1; c2, c4, ... on s2; h1, h3, ... on s4; h2, h4, ... on
    s5) and take ports 2.. there; extra hosts may hang off the core from port 5 (:meth:`core_port`). ``sX:p`` is
    OpenFlow port p of switch sX; hosts use eth0::

        +--------+                                +--------+
        |   s1   | s1:1                      s4:1 |   s4   |
        | dpid 1 |--------.            .----------| dpid 4 |
        +--------+        |            |          +--------+
                      s3:1|            |s3:3
                        +----------------+
                        |       s3       |
                        |     dpid 3     |
                        +----------------+
                      s3:2|            |s3:4
        +--------+        |            |          +--------+
        |   s2   |--------'            '----------|   s5   |
        | dpid 2 | s2:1                      s5:1 | dpid 5 |
        +--------+                                +--------+

        c1 10.0.0.1 --- s1:2                    s4:2 --- h1 10.0.0.11
        c3 10.0.0.3 --- s1:3                    s4:3 --- h3 10.0.0.13
        c2 10.0.0.2 --- s2:2                    s5:2 --- h2 10.0.0.12
        c4 10.0.0.4 --- s2:3                    s5:3 --- h4 10.0.0.14

    MACs spell the last address byte in decimal (10.0.0.12 is 00:00:00:00:00:12).
    """

    def build(self) -> None:
        """Add the five switches, the four edge-core links and the hosts."""
        for dpid, name in enumerate((*CLIENT_EDGES, CORE, *BACKEND_EDGES), 1):
            self.add_lab_switch(name, dpid)
        for core_port, edge in enumerate((*CLIENT_EDGES, *BACKEND_EDGES), 1):
            self.add_trunk(edge, 1, CORE, core_port)
        for index, name in enumerate(self.clients):
            edge = CLIENT_EDGES[index % len(CLIENT_EDGES)]
            self.add_lab_host(name, FIRST_CLIENT + index, edge, HOST_BASE_PORT + index // len(CLIENT_EDGES))
        for index, name in enumerate(self.backends):
            edge = BACKEND_EDGES[index % len(BACKEND_EDGES)]
            self.add_lab_host(name, FIRST_BACKEND + index, edge, HOST_BASE_PORT + index // len(BACKEND_EDGES))

    def core_port(self, index: int) -> int:
        """The core's port for the ``index``-th (0-based) extra host attached to it, after the four uplinks."""
        return len(CLIENT_EDGES) + len(BACKEND_EDGES) + 1 + index
