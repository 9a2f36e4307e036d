"""Single-switch lab topology: every client and backend on one OVS switch."""

from __future__ import annotations

from topologies.base import FIRST_BACKEND, FIRST_CLIENT, LabTopo


class SingleTopo(LabTopo):
    """One switch s1 (dpid 1); clients c1..cN on ports 1..N, backends h1..hM on ports N+1..N+M.

    Wiring with the defaults (3 clients, 3 backends); ``sX:p`` is OpenFlow port p of switch sX, hosts use eth0::

        c1 10.0.0.1  --- s1:1                 s1:4 --- h1 10.0.0.11
        c2 10.0.0.2  --- s1:2   +--------+    s1:5 --- h2 10.0.0.12
        c3 10.0.0.3  --- s1:3   |   s1   |    s1:6 --- h3 10.0.0.13
                                | dpid 1 |
                                +--------+

    Host MACs spell the last address byte in decimal: 10.0.0.12 is 00:00:00:00:00:12.
    """

    def build(self) -> None:
        """Add s1 and attach clients, then backends, on consecutive ports."""
        self.add_lab_switch("s1", 1)
        for index, name in enumerate(self.clients):
            self.add_lab_host(name, FIRST_CLIENT + index, "s1", 1 + index)
        for index, name in enumerate(self.backends):
            self.add_lab_host(name, FIRST_BACKEND + index, "s1", 1 + len(self.clients) + index)
