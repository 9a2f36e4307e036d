"""A multi-switch fake fabric: one FakeDatapath per switch of a config's ``fabric`` section, wired by its links.

An output on a link port is traced into the peer switch from the peer's port; an output on a host port is "delivered
to the host"; an output on any other port is recorded as stray. Packet-outs sent to a datapath (by a test, by the
core's messages or by the os-ken shell) are propagated the same way, and everything that happens is collected into a
:class:`Delivery` until :meth:`FakeFabric.collect` takes it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from nlb_sdn.config import Config, vip_mac
from nlb_sdn.flows.builders import bind
from nlb_sdn.framework import ofproto_v1_3 as ofp, ofproto_v1_3_parser as parser
from tests.fakeof.switch import TCP_SYN, FakeDatapath, PacketIn, SwitchError, TraceResult, tcp_packet
from tests.lib.shell_double import ShellDouble

MAX_HOPS = 16
"""A packet crossing more switches than this is looping: the fabric raises instead of recursing forever."""
WEB_VIP = "10.0.0.100"


@dataclass
class Delivery:
    """Where the packets of one step ended up: hosts, the controller, stray ports; and which switches they crossed."""

    delivered: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    packet_ins: list[tuple[int, PacketIn]] = field(default_factory=list)
    stray: list[tuple[int, int, dict[str, Any]]] = field(default_factory=list)
    hops: list[tuple[int, int]] = field(default_factory=list)
    traces: list[tuple[int, TraceResult]] = field(default_factory=list)
    lost: list[tuple[int, int, dict[str, Any]]] = field(default_factory=list)
    """Outputs on a cut link (``FakeFabric.cut``): the packet is gone."""

    @property
    def hosts(self) -> list[str]:
        """Names of the hosts that received a copy, in delivery order (a host appears once per copy)."""
        return [name for name, _ in self.delivered]

    def to(self, host: str) -> list[dict[str, Any]]:
        """The copies delivered to ``host``."""
        return [pkt for name, pkt in self.delivered if name == host]

    @property
    def nothing(self) -> bool:
        """True when the packet went nowhere at all: no host, no controller, no stray port."""
        return not self.delivered and not self.packet_ins and not self.stray

    def extend(self, other: Delivery) -> None:
        """Append everything of ``other``."""
        self.delivered += other.delivered
        self.packet_ins += other.packet_ins
        self.stray += other.stray
        self.hops += other.hops
        self.traces += other.traces
        self.lost += other.lost


ANSWERED_ERRORS = frozenset({"OFPGMFC_GROUP_EXISTS"})
"""Errors a fabric switch answers (recorded in ``answered``) and goes on after, instead of raising: the controller
expects them (an add of a switch-dispatch group the switch kept across a reconnect)."""


class FabricDatapath(FakeDatapath):
    """A FakeDatapath that belongs to a fabric: its packet-outs travel on, and OFPSetConfig is accepted."""

    def __init__(self, dpid: int, fabric: FakeFabric) -> None:
        super().__init__(dpid)
        self.fabric = fabric
        self.miss_send_len: int | None = None
        self.answered: list[SwitchError] = []
        """Errors the switch answered and went on after (``ANSWERED_ERRORS``), as Open vSwitch does, in order."""

    def send_msg(self, msg: Any) -> bool:
        """Apply a message like the fake switch; propagate a packet-out's outputs through the fabric."""
        if isinstance(msg, parser.OFPSetConfig):
            self.sent.append(msg)
            self.miss_send_len = msg.miss_send_len
            return True
        before = len(self.switch.packet_outs)
        try:
            super().send_msg(msg)
        except SwitchError as error:
            if error.code_name not in ANSWERED_ERRORS:
                raise
            self.answered.append(error)
        for result in self.switch.packet_outs[before:]:
            self.fabric.follow(self.id, result, self.fabric.pending, depth=0)
        return True


class FakeFabric:
    """The switches, links and host attachment points of a config's fabric, as connected fake datapaths."""

    def __init__(self, config: Config) -> None:
        fabric = config.fabric
        self.dpid_of = {s.name: s.dpid for s in fabric.switches}
        self.dps: dict[int, FabricDatapath] = {dpid: FabricDatapath(dpid, self) for dpid in self.dpid_of.values()}
        self.links: dict[tuple[int, int], tuple[int, int]] = {}
        for link in fabric.links:
            a = (self.dpid_of[link.a], link.a_port)
            b = (self.dpid_of[link.b], link.b_port)
            self.links[a] = b
            self.links[b] = a
        self.host_at: dict[str, tuple[int, int]] = {h.name: (self.dpid_of[h.switch], h.port) for h in fabric.hosts}
        self.host_at |= {g.name: (self.dpid_of[g.switch], g.port) for g in fabric.gateways}
        """Gateway routers count as hosts here: an output on an uplink port is delivered to the router."""
        self.host_on: dict[tuple[int, int], str] = {where: name for name, where in self.host_at.items()}
        self.hosts = {h.name: h for h in fabric.hosts}
        self.pending = Delivery()
        self.cut_ports: set[tuple[int, int]] = set()
        """Both ends of every cut link: what is sent there is lost."""

    # -- links ---------------------------------------------------------------------------------------------------------

    def cut(self, dpid: int, port: int) -> tuple[int, int]:
        """Cut the link at ``(dpid, port)`` (both directions); its other end."""
        peer = self.links[(dpid, port)]
        self.cut_ports |= {(dpid, port), peer}
        return peer

    def mend(self, dpid: int, port: int) -> None:
        """Mend the cut link at ``(dpid, port)``."""
        self.cut_ports -= {(dpid, port), self.links[(dpid, port)]}

    def restart(self, dpid: int) -> FabricDatapath:
        """Replace a switch by a fresh one with empty tables (a restarted OVS), wired to the same links and hosts."""
        self.dps[dpid] = FabricDatapath(dpid, self)
        return self.dps[dpid]

    # -- time and flows ------------------------------------------------------------------------------------------------

    def clock(self, now: float) -> None:
        """Set every switch's clock (install times and last hits are taken from it)."""
        for dp in self.dps.values():
            dp.switch.now = now

    def install(self, lb: Any) -> None:
        """Install ``lb.switch_flows(dpid)`` into every switch, as the shell does when a switch connects."""
        for dpid in self.dps:
            self.send(dpid, lb.switch_flows(dpid))

    def send(self, dpid: int, msgs: Iterable[Any]) -> Delivery:
        """Bind messages to a datapath, send them in order, and return what their packet-outs delivered."""
        dp = self.dps[dpid]
        for msg in bind(msgs, dp):
            dp.send_msg(msg)
        return self.collect()

    def send_all(self, changes: dict[int, list[Any]]) -> Delivery:
        """Send per-dpid message lists (what ``ShellDouble.apply_config`` returns, as the shell sends them)."""
        for dpid, msgs in changes.items():
            self.send(dpid, msgs)
        return self.collect()

    def expire(self, now: float) -> list[tuple[int, Any]]:
        """Advance every switch to ``now``; the flow-removed messages of expired entries, with their dpid."""
        removed = []
        for dpid, dp in self.dps.items():
            before = len(dp.switch.flow_removed)
            removed += [(dpid, msg) for msg in dp.switch.expire(now)]
            del dp.switch.flow_removed[before:]  # taken here: drain_flow_removed only sees deletes
        return removed

    def connection_flows(self, dpid: int, table: int) -> list[Any]:
        """The per-connection (NAT cookie kind) entries of one table of one switch."""
        return [e for e in self.dps[dpid].switch.dump_flows(table) if e.cookie >> 56 == 0x02]

    # -- packets -------------------------------------------------------------------------------------------------------

    def inject(self, host: str, pkt: dict[str, Any]) -> Delivery:
        """Host ``host`` sends ``pkt``: trace it from the host's attachment point through the fabric."""
        dpid, port = self.host_at[host]
        delivery = Delivery()
        self.enter(dpid, port, pkt, delivery, depth=0)
        return delivery

    def enter(self, dpid: int, port: int, pkt: dict[str, Any], delivery: Delivery, depth: int) -> None:
        """Trace ``pkt`` into switch ``dpid`` on ``port`` and follow its outputs."""
        if depth > MAX_HOPS:
            raise AssertionError(f"forwarding loop: more than {MAX_HOPS} hops, last at dpid {dpid} port {port}")
        delivery.hops.append((dpid, port))
        result = self.dps[dpid].switch.trace(pkt, port)
        self.follow(dpid, result, delivery, depth)

    def follow(self, dpid: int, result: TraceResult, delivery: Delivery, depth: int) -> None:
        """Record a trace's packet-ins and send each output on: to the peer switch, to a host, or stray."""
        delivery.traces.append((dpid, result))
        delivery.packet_ins += [(dpid, pi) for pi in result.packet_ins]
        for port, out in result.outputs:
            if (dpid, port) in self.cut_ports:
                delivery.lost.append((dpid, port, out))
            elif (dpid, port) in self.links:
                peer, peer_port = self.links[(dpid, port)]
                self.enter(peer, peer_port, out, delivery, depth + 1)
            elif (dpid, port) in self.host_on:
                delivered = dict(out)
                delivered.pop("in_port", None)
                delivery.delivered.append((self.host_on[(dpid, port)], delivered))
            else:
                delivery.stray.append((dpid, port, out))

    def collect(self) -> Delivery:
        """Take what packet-outs sent since the last collect have delivered."""
        pending, self.pending = self.pending, Delivery()
        return pending

    # -- a controller in the loop --------------------------------------------------------------------------------------

    def to_controller(self, lb: Any, delivery: Delivery, now: float) -> Delivery:
        """Feed every packet-in of ``delivery`` to ``lb`` as the shell would, send its answer, return what followed."""
        result = Delivery()
        for dpid, pi in delivery.packet_ins:
            msg = pi.to_msg(self.dps[dpid])
            msgs = lb.handle_packet_in(
                dpid, msg.match["in_port"], msg.data, msg.total_len, msg.table_id, now, msg.cookie
            )
            result.extend(self.send(dpid, msgs))
        return result

    def run(self, lb: Any, host: str, pkt: dict[str, Any], now: float, rounds: int = 4) -> tuple[Delivery, Delivery]:
        """Inject ``pkt`` and let ``lb`` answer packet-ins until none are left; (first pass, everything after)."""
        first = self.inject(host, pkt)
        after = Delivery()
        current = first
        for _ in range(rounds):
            if not current.packet_ins:
                break
            current = self.to_controller(lb, current, now)
            after.extend(current)
        else:
            if current.packet_ins:
                raise AssertionError(f"still punting after {rounds} controller rounds")
        return first, after

    def flow_removed_to(self, lb: Any, removed: Iterable[tuple[int, Any]]) -> Delivery:
        """Feed flow-removed messages to ``lb`` as the shell would and send its answers to the same switch."""
        result = Delivery()
        for dpid, msg in removed:
            msgs = lb.handle_flow_removed(dpid, msg.table_id, msg.cookie, dict(msg.match.items()))
            result.extend(self.send(dpid, msgs))
        return result

    def drain_flow_removed(self, dpid: int) -> list[tuple[int, Any]]:
        """Flow-removed messages a switch emitted (expiry or delete) that were not taken yet."""
        switch = self.dps[dpid].switch
        taken, switch.flow_removed = switch.flow_removed, []
        return [(dpid, msg) for msg in taken]


class CoreNet:
    """A LoadBalancer core (driven through a ShellDouble) and the fake fabric it drives, installed at time 0, with host
    and segment shortcuts."""

    def __init__(self, config: Config) -> None:
        self.lb = ShellDouble(config)
        self.fab = FakeFabric(config)
        self.fab.clock(0.0)
        self.fab.install(self.lb)

    def ip(self, host: str) -> str:
        """A host's address."""
        return self.fab.hosts[host].ip

    def mac(self, host: str) -> str:
        """A host's MAC."""
        return self.fab.hosts[host].mac

    def port(self, host: str) -> int:
        """The switch port a host is attached to."""
        return self.fab.host_at[host][1]

    def to_vip(
        self, client: str, sport: int, flags: int = TCP_SYN, vip: str = WEB_VIP, vport: int = 80, payload: bytes = b""
    ) -> dict[str, Any]:
        """A segment from ``client`` to a VIP (sent to the VIP's MAC, as after ARP)."""
        return tcp_packet(self.mac(client), vip_mac(vip), self.ip(client), vip, sport, vport, flags, payload=payload)

    def open(self, client: str, sport: int, now: float = 0.0) -> str:
        """Open one connection to VIP web through the controller; the member (host) the SYN reached."""
        self.fab.clock(now)
        first, after = self.fab.run(self.lb, client, self.to_vip(client, sport), now)
        assert len(first.packet_ins) == 1 and not first.delivered
        assert len(after.delivered) == 1 and not after.packet_ins and not after.stray
        return after.hosts[0]


def reason_name(reason: int) -> str:
    """OFPRR_* name of a flow-removed reason, for readable assertions."""
    return {ofp.OFPRR_IDLE_TIMEOUT: "idle", ofp.OFPRR_HARD_TIMEOUT: "hard", ofp.OFPRR_DELETE: "delete"}.get(
        reason, str(reason)
    )
