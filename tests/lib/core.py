"""The pure core in tests: client SYNs to VIP web, punted as a switch would to a LoadBalancer core via a ShellDouble."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from nlb_sdn.core.frames import TCP_ACK, TCP_SYN, TcpSegment
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


def probe_tick(
    lb: ShellDouble, now: float, down: Iterable[str] = (), dpids: Iterable[int] = ()
) -> dict[int, list[Any]]:
    """The timer at ``now``, then an answer to every health probe outstanding except those to the members named in
    ``down``; the tick's messages per switch of ``dpids``."""
    _datagrams, msgs = lb.tick(now, list(dpids))
    for (_vip, member), state in list(lb.health.prober.states.items()):
        probe, target = state.outstanding, state.target
        if probe is None or member in down:
            continue
        reply = TcpSegment(
            target.member_mac,
            target.member_address,
            target.vip_ip,
            target.member_port,
            probe.port,
            TCP_SYN | TCP_ACK,
            ack=(probe.isn + 1) % 2**32,
        )
        lb.health.handle_probe_reply(reply, target.dpid, target.port, lambda _member: True)
    return msgs
