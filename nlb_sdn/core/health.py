"""Health and load in the core: H&L datagrams from agents, controller probes and their replies, member state."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nlb_sdn.config import Config
from nlb_sdn.core.context import CoreContext
from nlb_sdn.core.effects import Out
from nlb_sdn.core.frames import TcpSegment
from nlb_sdn.core.manager import Manager
from nlb_sdn.flows import builders
from nlb_sdn.health.probes import ProbeReject


class HealthManager(Manager):
    """Feeds the H&L handler (FIG. 12-18) from the core's events and turns what it sends into effects."""

    def __init__(self, ctx: CoreContext, counted: Callable[[str, str], int] | None = None) -> None:
        self.ctx = ctx
        self.counted = counted
        """Estimated live connections the switch counts but the tables do not list (``switch_tracking: counters``)."""

    def config_changed(self, config: Config, now: float, out: Out) -> None:
        """Take a new model; directive changes of agent members are relayed to their agents."""
        out.datagrams.extend(self.ctx.health.set_config(config, self.ctx.fabric.attachment, now))

    def probe_reply(self, segment: TcpSegment, dpid: int, in_port: int, out: Out) -> None:
        """A member's answer to a controller health probe: record it and reset the half-open connection."""
        sends = self.ctx.health.handle_probe_reply(segment, dpid, in_port, self.ctx.fabric.has_mac)
        if isinstance(sends, ProbeReject):
            self.ctx.counters.dropped[sends.value] += 1
            return
        self.ctx.counters.packet_in["probe_reply"] += 1
        out.send(dpid, [builders.packet_out_port(send.port, send.frame) for send in sends])

    def datagram(self, data: bytes, addr: tuple[str, int], now: float, out: Out) -> None:
        """An H&L message from an agent: the replies to send back (application sessions are recorded)."""
        replies, session = self.ctx.health.handle_datagram(data, addr, now, self.ctx.fabric.has_mac)
        out.datagrams.extend(replies)
        if session is not None:
            state = self.ctx.vips.by_service(session.body["vip"], session.body["vport"])  # required by the schema
            self.ctx.affinity.app_session(session.type, session.body, state, now, out)

    def tick(self, now: float, out: Out) -> None:
        """Periodic H&L work: datagrams for agents, and probe packet-outs toward members."""
        datagrams, sends = self.ctx.health.tick(now, self.live, self.ctx.fabric.has_mac)
        out.datagrams.extend(datagrams)
        for send in sends:
            out.send(send.dpid, [builders.packet_out_port(send.port, send.frame)])

    def live(self, vip: str, member: str) -> int:
        """Live connections and per-session flows of one member of one VIP service."""
        counted = self.counted(vip, member) if self.counted is not None else 0
        return self.ctx.table.live(vip, member) + self.ctx.affinity.live_flows(vip, member) + counted

    def member_state(self, vip: str, member: str) -> dict[str, Any]:
        """Target and current state of a member: ``draining`` becomes ``drained`` when its last connection is gone."""
        service = self.ctx.config.vip(vip)
        found = service.member(member) if service else None
        if service is None or found is None:
            raise KeyError(f"{vip}/{member}")
        return self.ctx.health.member_state(service, found, self.live(vip, found.name))

    def allotment(self, vip: str, now: float) -> dict[str, Any]:
        """The VIP's allotment in use, with every candidate's eligibility."""
        service = self.ctx.config.vip(vip)
        if service is None:
            raise KeyError(vip)
        return self.ctx.health.allotment_view(service, self.ctx.fabric.has_mac, now)
