"""The service kind of a VIP: how a new connection to it is classified and plumbed, chosen once per VIP model.

:class:`NatService` is controller dispatch in nat mode, per connection; the other kinds (``services/``) refine it.
The dispatcher hands a service every punted segment of its VIP from the connection tables; the service never asks
which kind it is.

SYN-flood protection (``controller.flood``): a new connection's flows first get the short ``half_open_idle`` timeout,
so a spoofed SYN's entries are gone within seconds; a real connection's segments keep them alive, and one that idles
out after its handshake is re-plumbed from its lingering route with the VIP's full ``idle_timeout``. A client prefix
opens at most ``source_quota`` new connections per window (``SourceQuota``); the excess is refused, never tracked.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from nlb_sdn.affinity.sessions import client_prefix
from nlb_sdn.config import Member
from nlb_sdn.core.context import CoreContext
from nlb_sdn.core.effects import Out
from nlb_sdn.core.frames import IPPROTO_TCP, TcpSegment
from nlb_sdn.core.model import SYN_TAG_MASK, Affinity, Connection, PacketIn, VipState
from nlb_sdn.core.quota import SourceQuota
from nlb_sdn.core.refusals import RefusalReason, record_refusal, refuse
from nlb_sdn.flows import builders, templates, tunnel
from nlb_sdn.flows.l4 import L4Protocol
from nlb_sdn.flows.pipeline import CookieKind, make_cookie


def plumb(route: builders.NatRoute, pkt: PacketIn, ctx: CoreContext, syn: bool = False) -> list[Any]:
    """Flows for both directions, then the punted packet released through them when it arrived whole.

    Nat flow-mods and the packet-out are prepared messages (``templates``): packed from bytes, not serialised.
    A SYN is released with its entry's own actions: through table 0 it would meet the VIP's SYN entry again.
    """
    if isinstance(route, tunnel.TunnelRoute):
        msgs = tunnel.tunnel_connection_flows(route)
        release = (
            tunnel.tunnel_packet_out(route, pkt.in_port, pkt.data)
            if syn
            else templates.packet_out_table(pkt.in_port, pkt.data)
        )
    else:
        msgs = templates.nat_connection_flows(route)
        release = (
            templates.nat_packet_out(route, pkt.in_port, pkt.data)
            if syn
            else templates.packet_out_table(pkt.in_port, pkt.data)
        )
    if pkt.whole:
        msgs.append(release)
    else:
        ctx.counters.packet_in["held_truncated"] += 1
    return msgs


def half_open(route: builders.NatRoute, ctx: CoreContext) -> builders.NatRoute:
    """The route whose flows a connection gets until its handshake is known to be done: the short idle timeout.

    A UDP flow has no handshake to wait for: it gets the VIP's idle timeout at once."""
    short = ctx.config.controller.flood.half_open_idle
    if not short or short >= route.idle_timeout or not route.protocol.has_handshake:
        return route
    return dataclasses.replace(route, idle_timeout=short)


class NatService:
    """Controller dispatch in nat mode: the classifier picks a member per connection and rewrites both directions."""

    punts_syns: ClassVar[bool] = True
    """Whether every SYN to the VIP service goes to the controller (it dispatches it, and per connection)."""
    reuse_keeps_member: ClassVar[bool] = True
    """Whether a new connection from a reused client port goes to the ended connection's member while that member
    may take new connections (``reuse_member``)."""

    def __init__(self, ctx: CoreContext, state: VipState) -> None:
        self.ctx = ctx
        self.state = state
        flood = ctx.config.controller.flood
        window = flood.half_open_idle or state.vip.idle_timeout
        self.quota = SourceQuota(flood.source_prefix, flood.source_quota, window)
        """New connections per client prefix: the ``source_quota`` of ``controller.flood``."""

    def route(self, member: Member, client_ip: str, client_port: int) -> builders.NatRoute:
        """The rewrite toward ``member`` for one client connection."""
        return nat_route(self.ctx, self.state, member, client_ip, client_port)

    def packet_in(self, pkt: PacketIn, out: Out) -> None:
        """A segment that met no connection entry: a new connection, a known one, or a late one to re-plumb."""
        ctx, seg, key = self.ctx, pkt.segment, pkt.key
        if seg.proto != IPPROTO_TCP:
            self.datagram(pkt, out)
            return
        conn, ended = ctx.table.get(key), None
        if conn is not None and seg.is_pure_syn and self.reused_ports(conn, seg):
            ctx.counters.packet_in["port_reuse"] += 1
            ctx.table.forget(key)
            conn, ended = None, conn
        if conn is not None:
            ctx.counters.packet_in["syn_retransmit" if seg.is_pure_syn else "existing_connection"] += 1
            conn.dpid = pkt.dpid
            route = half_open(conn.route, ctx) if seg.is_pure_syn else conn.route
            out.send(pkt.dpid, plumb(route, pkt, ctx, seg.is_pure_syn))
        elif not seg.is_pure_syn:
            self._replumb(pkt, out)
        elif ctx.table.full():
            refuse(ctx, self.state.vip.name, RefusalReason.CAP, pkt)
        elif not self.quota.admit(seg.src_ip, pkt.now):
            refuse(ctx, self.state.vip.name, RefusalReason.SOURCE_QUOTA, pkt)
        elif (kept := self.reuse_member(ended)) is not None:
            ctx.counters.packet_in["port_reuse_same_member"] += 1
            self.track(pkt, kept, self.route(kept, seg.src_ip, seg.src_port), out)
        else:
            self.new_connection(pkt, out)

    def datagram(self, pkt: PacketIn, out: Out) -> None:
        """A UDP datagram no flow entry took: a known flow's (plumbed again), one that idled out while its route
        lingers (re-plumbed to the same member), or the first of a new flow (balanced, under the cap and quota).

        Any datagram may start a flow, so each is released with its flow's own actions, as a SYN is.
        """
        ctx, key = self.ctx, pkt.key
        conn = ctx.table.get(key)
        if conn is not None:
            ctx.counters.packet_in["existing_connection"] += 1
            conn.dpid = pkt.dpid
        elif (conn := ctx.table.revive(key, pkt.dpid, pkt.now, out)) is not None:
            ctx.counters.packet_in["replumb"] += 1
        elif ctx.table.full():
            refuse(ctx, self.state.vip.name, RefusalReason.CAP, pkt)
            return
        elif not self.quota.admit(pkt.segment.src_ip, pkt.now):
            refuse(ctx, self.state.vip.name, RefusalReason.SOURCE_QUOTA, pkt)
            return
        else:
            self.new_connection(pkt, out)
            return
        out.send(pkt.dpid, plumb(conn.route, pkt, ctx, syn=True))

    def reuse_member(self, ended: Connection | None) -> Member | None:
        """The member a new connection from the client port of the ``ended`` one goes to without being balanced:
        the ended connection's, while it may take new connections and the VIP pins no clients (affinity decides).

        Replacing the ended connection's table-1 entry in place does not reach Open vSwitch's datapath at once: its
        cached flow for the client's segments (same headers, the ACK flag) keeps the old rewrite until a revalidator
        re-checks it, a few ms later and never synchronised with a barrier. Toward another member the new connection's
        first ACK and request went to the old member (a TIME_WAIT socket there) and were lost: one retransmission
        timeout, 200 ms (docs/pipeline.md, "SYNs and reused client ports"). Toward the same member the cached flow
        does what the new entry does, and the member's TIME_WAIT socket takes the new SYN as any server does.
        """
        if ended is None or not self.reuse_keeps_member or self.state.affinity != Affinity.NONE:
            return None
        vip = self.state.vip
        member = vip.member(ended.member)
        if member is None or member.address != ended.route.member_address or member.port != ended.route.member_port:
            return None
        return member if self.ctx.health.candidate(vip, member, self.ctx.fabric.has_mac).eligible else None

    def reused_ports(self, conn: Connection, seg: TcpSegment) -> bool:
        """Whether a SYN for a known connection opens a new one from the same client port (rather than repeating
        the first SYN): its sequence number differs."""
        return conn.syn_tag is not None and conn.syn_tag != seg.seq & SYN_TAG_MASK

    def _replumb(self, pkt: PacketIn, out: Out) -> None:
        """A later segment of a connection whose entry is gone: re-plumb its remembered route, or drop an orphan.

        The route has the VIP's full idle timeout: a segment after the half-open entries idled out shows a connection
        that got past its handshake.
        """
        conn = self.ctx.table.revive(pkt.key, pkt.dpid, pkt.now, out)
        if conn is None:
            self.ctx.counters.dropped["orphan"] += 1
            return
        self.ctx.counters.packet_in["replumb"] += 1
        out.send(pkt.dpid, plumb(conn.route, pkt, self.ctx))

    def choose(self, pkt: PacketIn, out: Out) -> Member | None:
        """The member for a new connection: the client's session's, else the allotment's pick."""
        vip, client_ip = self.state.vip, pkt.segment.src_ip
        if self.state.affinity != Affinity.NONE:
            member = self.ctx.affinity.member_for(vip, client_ip, pkt.now, out)
            if member is not None:
                return member
        name = self.ctx.health.pick(vip, self.ctx.fabric.has_mac, pkt.now)
        member = vip.member(name) if name else None
        if member is not None and self.state.affinity == Affinity.CLIENT_IP:
            self.ctx.affinity.remember_client(vip, member, client_ip, pkt.now, out)
        return member

    def new_connection(self, pkt: PacketIn, out: Out) -> None:
        """Pick a member for a new connection and plumb both directions, then track it."""
        member = self.choose(pkt, out)
        if member is None:
            record_refusal(self.ctx, self.state.vip.name, RefusalReason.NO_MEMBER, pkt)
        else:
            self.track(pkt, member, self.route(member, pkt.segment.src_ip, pkt.segment.src_port), out)

    def track(self, pkt: PacketIn, member: Member, route: builders.NatRoute, out: Out) -> None:
        """Plumb a new connection along ``route`` with the half-open timeout (its SYN released through it), track it."""
        ctx, vip = self.ctx, self.state.vip
        ctx.counters.selected(vip.name, member.name)
        ctx.counters.packet_in["new_connection"] += 1
        out.send(pkt.dpid, plumb(half_open(route, ctx), pkt, ctx, syn=True))
        syn_tag = pkt.segment.seq & SYN_TAG_MASK if route.protocol.has_handshake else None
        conn = Connection(pkt.dpid, vip.name, member.name, route, pkt.now, syn_tag=syn_tag)
        ctx.table.add(pkt.key, conn, out)


def nat_route(
    ctx: CoreContext,
    state: VipState,
    member: Member,
    client_ip: str,
    client_port: int,
    kind: CookieKind = CookieKind.NAT,
) -> builders.NatRoute:
    """The nat rewrite toward ``member`` for one client connection (or, with kind SESSION, a client's session)."""
    vip = state.vip
    session = kind == CookieKind.SESSION
    return builders.NatRoute(
        client_ip=client_ip,
        client_port=client_port,
        vip_ip=vip.address,
        vip_port=vip.port,
        vip_mac=vip.mac,
        member_address=member.address,
        member_port=member.port,
        member_mac=ctx.fabric.member_mac(member.address, member.mac),
        cookie=make_cookie(kind, ctx.lbu_id, state.vip_id, member.endpoint_id),
        idle_timeout=vip.session_flow_idle if session else vip.idle_timeout,
        hard_timeout=vip.hard_timeout,
        protocol=L4Protocol(vip.protocol),
    )


class SessionService(NatService):
    """Controller dispatch with per-session flows: one flow pair carries all of a client's connections."""

    punts_syns = False
    reuse_keeps_member = False

    def new_connection(self, pkt: PacketIn, out: Out) -> None:
        """One flow pair for all of a client's connections to the VIP, then the SYN released through it."""
        member = self.choose(pkt, out)
        if member is None:
            return
        ctx, vip, client_ip = self.ctx, self.state.vip, pkt.segment.src_ip
        client = client_prefix(client_ip, vip.affinity_prefix)
        route = nat_route(ctx, self.state, member, client_ip, 0, CookieKind.SESSION)
        if ctx.affinity.session_flow(pkt.dpid, vip.name, client, member.name):
            ctx.counters.packet_in["session_flow_pending"] += 1
        else:
            ctx.counters.packet_in["new_session"] += 1
            ctx.counters.selected(vip.name, member.name)
        msgs = builders.session_flows(client, route)
        if pkt.whole:
            msgs.append(builders.packet_out_table(pkt.in_port, pkt.data))
        out.send(pkt.dpid, msgs)
