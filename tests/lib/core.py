"""The pure core in tests: client SYNs to VIP web, punted as a switch would to a LoadBalancer core via a ShellDouble."""

from __future__ import annotations

from typing import Any

from nlb_sdn.flows.pipeline import Table
from tests.frames import syn_frame
from tests.lib.configs import WEB_VIP
from tests.lib.shell_double import ShellDouble


def punt_syn(
    lb: ShellDouble, client: str = "10.0.0.1", port: int = 40000, *, dpid: int = 1, in_port: int = 1, now: float = 1.0
) -> list[Any]:
    """A SYN from ``client``:``port`` to VIP web (10.0.0.100:80) punted by switch ``dpid`` from ``in_port``; the
    messages the core answers with."""
    frame = syn_frame(client, port, WEB_VIP, 80)
    return lb.handle_packet_in(dpid, in_port, frame, len(frame), Table.CONNECTIONS, now=now)


def punt_syns(lb: ShellDouble, count: int, first_port: int = 40000, now: float = 1.0) -> None:
    """``count`` SYNs from 10.0.0.1, from consecutive ports starting at ``first_port``, punted by switch 1."""
    for port in range(first_port, first_port + count):
        punt_syn(lb, port=port, now=now)
