"""Scale-out lab fabric: FabricTopo's edges and forwarders s3, s4, plus a third forwarder s5 to add at runtime."""

from __future__ import annotations

from topologies.fabric import FabricTopo

SPARE = "s5"
"""The forwarder a scale-out test adds through ``POST /v1/forwarders`` (leave it out of the starting config)."""
SPARE_DPID = 5
SPARE_EDGE_PORT = 200
"""The edges' port toward s5: above every host and router port the edges may use."""


class ScaleoutTopo(FabricTopo):
    """Front edge s1 (clients), back edge s2 (backends) and three forwarders s3, s4, s5, each linked to both edges.

    ``sX:p`` is OpenFlow port p of switch sX; s3 and s4 are wired as in FabricTopo (edge ports 1 and 2), s5 on edge
    port 200 of both edges; hosts use eth0::

                              s3:1 +--------+ s3:2
                        .----------| dpid 3 |----------.
                        |          +--------+          |
                      s1:1                           s2:1
        +--------+    s1:2    s4:1 +--------+ s4:2    s2:2    +--------+
        |   s1   |-----------------| dpid 4 |-----------------|   s2   |
        | dpid 1 |                 +--------+                 | dpid 2 |
        +--------+                                            +--------+
                      s1:200                         s2:200
                        |     s5:1 +--------+ s5:2     |
                        '----------| dpid 5 |----------'
                                   +--------+

        c1 10.0.0.1 --- s1:3                    s2:3 --- h1 10.0.0.11
        c2 10.0.0.2 --- s1:4                    s2:4 --- h2 10.0.0.12
        c3 10.0.0.3 --- s1:5                    s2:5 --- h3 10.0.0.13

    Clients take s1 ports 3.., backends s2 ports 3.. (as in FabricTopo).
    """

    def build(self) -> None:
        """FabricTopo's switches, links and hosts, then the spare forwarder s5 and its two links."""
        super().build()
        self.add_lab_switch(SPARE, SPARE_DPID)
        self.add_trunk("s1", SPARE_EDGE_PORT, SPARE, 1)
        self.add_trunk("s2", SPARE_EDGE_PORT, SPARE, 2)
