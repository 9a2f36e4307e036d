"""Controller health probes for agentless members: a TCP SYN sent through the switches, the reply punted back.

The controller sends a SYN from the VIP address (VIP MAC, source port in the probe range) out of the member's switch
port. The member's SYN-ACK (alive) or RST (port closed) comes back to the VIP address at that probe port, which a
table 0 entry punts to the controller; the controller then resets the half-open connection. No answer within the
timeout is a failure. Rise/fall counts turn single results into a health state. Pure: it takes ``now`` and returns
frames to send.

A reply counts only if it comes from the member's address and port, arrives on the member's switch port (the dpid
and port the probe went out of), and acknowledges the probe: each probe's SYN carries a random initial sequence number
(ISN), and in SYN-SENT a SYN-ACK or an RST is acceptable only with ACK set and ack = ISN + 1 (RFC 793 section 3.9;
an RST without ACK is dropped). So a host that spoofs a member's address elsewhere on the data path, or that cannot see
the probe, can neither keep a dead member in the pool nor take a live one out.
"""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass, field
from typing import NamedTuple

from nlb_sdn.config import PROBE_PORT_BASE, Probe
from nlb_sdn.core.frames import TCP_ACK, TCP_RST, TCP_SYN, TcpSegment, tcp_frame

PROBE_PORTS = 0x10000 - PROBE_PORT_BASE
PROBE_WINDOW = 1024
"""The TCP window of the controller's probe segments."""
SEQ_MODULUS = 1 << 32
ProbeKey = tuple[str, str]


class ProbeReject(enum.StrEnum):
    """Why a punted probe reply was ignored (the name of its drop counter)."""

    UNMATCHED = "probe_reply_unmatched"
    WRONG_PORT = "probe_reply_wrong_port"
    BAD_ACK = "probe_reply_bad_ack"
    BAD_FLAGS = "probe_reply_bad_flags"


class Outstanding(NamedTuple):
    """A probe in flight: its source port, when it was sent and its SYN's initial sequence number."""

    port: int
    sent_at: float
    isn: int


@dataclass(frozen=True, slots=True)
class ProbeTarget:
    """One member to probe, and where it is attached."""

    vip: str
    member: str
    vip_ip: str
    vip_mac: str
    member_address: str
    member_port: int
    member_mac: str
    dpid: int
    port: int


@dataclass(frozen=True, slots=True)
class ProbeSend:
    """A frame for the shell to send out of ``port`` on switch ``dpid``."""

    dpid: int
    port: int
    frame: bytes


@dataclass(slots=True)
class ProbeState:
    """Rise/fall bookkeeping of one member."""

    target: ProbeTarget
    health: str = "unknown"
    successes: int = 0
    failures: int = 0
    next_at: float = 0.0
    outstanding: Outstanding | None = None
    last_result: str = ""
    results: dict[str, int] = field(default_factory=dict)


class Prober:
    """Schedules probes, matches replies and keeps each member's health (``ok``, ``failed`` or ``unknown``)."""

    def __init__(self, settings: Probe) -> None:
        self.settings = settings
        self.states: dict[ProbeKey, ProbeState] = {}
        self._by_port: dict[int, ProbeKey] = {}
        self._next_port = 0

    def set_targets(self, targets: list[ProbeTarget]) -> bool:
        """Probe exactly these members from now on, keeping the state of those that stay; True when any member's
        probe state was dropped or started afresh (its health is then unknown)."""
        wanted = {(t.vip, t.member): t for t in targets}
        gone = [k for k in self.states if k not in wanted]
        for key in gone:
            self._clear_outstanding(self.states.pop(key))
        reset = bool(gone)
        for key, target in wanted.items():
            state = self.states.get(key)
            if state is None:
                self.states[key] = ProbeState(target)
                reset = True
            elif state.target != target:
                self._clear_outstanding(state)
                self.states[key] = ProbeState(target)
                reset = True
        return reset

    def health(self, vip: str, member: str) -> str:
        """The member's probe health; ``unknown`` until enough results (it counts as failed)."""
        state = self.states.get((vip, member))
        return state.health if state else "unknown"

    def due(self, now: float) -> tuple[list[ProbeSend], list[ProbeKey]]:
        """Expire unanswered probes and send the ones that are due; return frames and members whose health changed."""
        sends: list[ProbeSend] = []
        changed: list[ProbeKey] = []
        for key, state in self.states.items():
            if state.outstanding and now - state.outstanding.sent_at >= self.settings.timeout:
                self._clear_outstanding(state)
                if self._observe(state, False, "timeout"):
                    changed.append(key)
            if state.outstanding is None and now >= state.next_at:
                port = self._allocate_port(key)
                isn = secrets.randbits(32)
                state.outstanding = Outstanding(port, now, isn)
                state.next_at = now + self.settings.interval
                target = state.target
                sends.append(
                    ProbeSend(
                        target.dpid,
                        target.port,
                        tcp_frame(
                            target.vip_mac,
                            target.member_mac,
                            target.vip_ip,
                            target.member_address,
                            port,
                            target.member_port,
                            TCP_SYN,
                            seq=isn,
                            window=PROBE_WINDOW,
                        ),
                    )
                )
        return sends, changed

    def on_reply(
        self, segment: TcpSegment, dpid: int, in_port: int
    ) -> tuple[list[ProbeSend], list[ProbeKey]] | ProbeReject:
        """Handle a reply punted by switch ``dpid`` from ``in_port``; why it was ignored if it answers no probe."""
        key = self._by_port.get(segment.dst_port)
        state = self.states.get(key) if key else None
        if key is None or state is None or state.outstanding is None:
            return ProbeReject.UNMATCHED
        target, probe = state.target, state.outstanding
        if (segment.src_ip, segment.src_port) != (target.member_address, target.member_port):
            return ProbeReject.UNMATCHED
        if (dpid, in_port) != (target.dpid, target.port):
            return ProbeReject.WRONG_PORT
        if not segment.flags & TCP_ACK or segment.ack != (probe.isn + 1) % SEQ_MODULUS:
            return ProbeReject.BAD_ACK
        refused = bool(segment.flags & TCP_RST)
        if not refused and not segment.flags & TCP_SYN:
            return ProbeReject.BAD_FLAGS
        self._clear_outstanding(state)
        sends = [] if refused else [self._reset(target, probe)]
        changed = [key] if self._observe(state, not refused, "refused" if refused else "syn_ack") else []
        return sends, changed

    @staticmethod
    def _reset(target: ProbeTarget, probe: Outstanding) -> ProbeSend:
        """The RST that closes the member's half-open connection (its sequence number is the one the member expects)."""
        frame = tcp_frame(
            target.vip_mac,
            target.member_mac,
            target.vip_ip,
            target.member_address,
            probe.port,
            target.member_port,
            TCP_RST,
            seq=(probe.isn + 1) % SEQ_MODULUS,
            window=PROBE_WINDOW,
        )
        return ProbeSend(target.dpid, target.port, frame)

    def as_dict(self) -> dict[str, dict[str, object]]:
        """Per member: health, last result and result counts (for REST)."""
        return {
            f"{vip}/{member}": {"health": s.health, "last_result": s.last_result, "results": dict(s.results)}
            for (vip, member), s in sorted(self.states.items())
        }

    def _observe(self, state: ProbeState, success: bool, result: str) -> bool:
        """Apply one result with rise/fall; True if the health changed."""
        state.last_result = result
        state.results[result] = state.results.get(result, 0) + 1
        if success:
            state.successes, state.failures = state.successes + 1, 0
            new = "ok" if state.successes >= self.settings.rise else state.health
        else:
            state.failures, state.successes = state.failures + 1, 0
            new = "failed" if state.failures >= self.settings.fall or state.health == "unknown" else state.health
        if new == state.health:
            return False
        state.health = new
        return True

    def _allocate_port(self, key: ProbeKey) -> int:
        """The next free source port of the probe range."""
        for _ in range(PROBE_PORTS):
            port = PROBE_PORT_BASE + self._next_port
            self._next_port = (self._next_port + 1) % PROBE_PORTS
            if port not in self._by_port:
                self._by_port[port] = key
                return port
        raise RuntimeError("no free health-probe port")

    def _clear_outstanding(self, state: ProbeState) -> None:
        """Forget a probe in flight."""
        if state.outstanding is not None:
            self._by_port.pop(state.outstanding.port, None)
            state.outstanding = None
