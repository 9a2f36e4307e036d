"""The H&L handler 314 of one LBU: agent messages, controller probes, eligibility, allotments and directives.

Pure: it takes ``now`` and returns datagrams and frames for the app shell to send. The classifier core asks it for
the next member of a VIP service (``pick``), and tells it about config changes and live connection counts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from nlb_sdn.config import Config, Fabric, Member, Vip
from nlb_sdn.config.diff import member_diff
from nlb_sdn.core.frames import TcpSegment
from nlb_sdn.health.allotment import Allotment, AllotmentSpender, Candidate, Service, compute_allotment
from nlb_sdn.health.cache import Endpoint, HLCache, agent_eligibility
from nlb_sdn.health.candidates import CandidateCache
from nlb_sdn.health.current import (
    TARGET_ORDER as TARGET_ORDER,  # re-exported: its home was here
    CurrentStates,
    PostulateQueue,
    current_state,
    effective_target,
)
from nlb_sdn.health.probes import Prober, ProbeReject, ProbeSend, ProbeTarget
from nlb_sdn.health.protocol import UDP_MAX_SIZE, Verifier
from nlb_sdn.health.table import app_id_of
from nlb_sdn.signed import KeyRing, Message, SequenceCounter, SharedKey, encode

Datagram = tuple[tuple[str, int], bytes]
MemberKey = tuple[str, str]
"""``(VIP name, member name)``."""
SESSION_TYPES = ("session_up", "session_down")


@dataclass(frozen=True, slots=True)
class Attachment:
    """Where a member is attached to the fabric, and its MAC."""

    dpid: int
    port: int
    mac: str


class HealthHandler:
    """Eligibility of every member from its health source, and the allotments spent by the classifier."""

    def __init__(self, config: Config, keys: KeyRing | bytes, now: float) -> None:
        """A handler verifying agents' messages with ``keys`` (each host's key; no keys: H&L is off)."""
        settings = config.controller.health
        self.cache = HLCache(settings.hb_period, settings.miss_limit, config.controller.lbu_id, started_at=now)
        self.keys: KeyRing | None = (SharedKey(keys) if keys else None) if isinstance(keys, bytes) else keys
        self.verifier = Verifier(self.keys, UDP_MAX_SIZE) if self.keys is not None else None
        self.seq = SequenceCounter()
        self.prober = Prober(settings.probe)
        self.spenders: dict[str, AllotmentSpender] = {}
        self.generations: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        self._vips: dict[str, Vip] = {}
        self._members_at: dict[Endpoint, dict[MemberKey, None]] = {}
        """The (VIP name, member name) of every member at an endpoint, in the order they were indexed."""
        self._members_named: dict[MemberKey, Member] = {}
        self._agent_vips: dict[str, tuple[Vip, bool]] = {}
        self._candidates = CandidateCache()
        self._probe_revision = 0
        self._fabric: Fabric | None = None
        self._fabric_revision = 0
        self.current = CurrentStates()
        """The current state reported to every agent, refreshed where something changed."""
        self.postulating = PostulateQueue()
        """The hosts still owed this round's postulate."""
        self._revision = 0
        self.config = config
        self._next_postulate = now + settings.postulate_period
        self._last_warm_hosts: list[str] = []
        self.reassessed: dict[tuple[str, str], tuple[Vip, Member]] = {}
        """Members whose eligibility may have changed since the last ``take_reassessed`` (the core revokes the
        pinned state of those that lost it)."""

    @property
    def config(self) -> Config:
        """The model in use."""
        return self._config

    @config.setter
    def config(self, config: Config) -> None:
        self._config = config
        self._revision += 1
        self.current.set_config(config)
        if not (config.fabric is self._fabric or config.fabric == self._fabric):
            self._fabric, self._fabric_revision = config.fabric, self._fabric_revision + 1
        self._index(config.vips)

    def _index(self, vips: list[Vip]) -> None:
        """Index the members by endpoint and by name, re-indexing only those a VIP's new model added, changed or
        removed (a weight change of one member of 20,000 touches one entry)."""
        wanted = {vip.name: vip for vip in vips}
        for name, vip in self._vips.items():
            if name not in wanted:
                for member in vip.members:
                    self._unindex(name, member)
        for vip in vips:
            before = self._vips.get(vip.name)
            if before is vip:
                continue
            diff = member_diff(before, vip)
            for member in diff.removed:
                self._unindex(vip.name, member)
            for was, member in diff.changed:
                self._unindex(vip.name, was)
                self._index_member(vip.name, member)
            for member in diff.added:
                self._index_member(vip.name, member)
        self._vips = wanted
        self._candidates.forget(set(wanted))

    def _index_member(self, vip: str, member: Member) -> None:
        key = (vip, member.name)
        self._members_named[key] = member
        self._members_at.setdefault((member.address, member.port), {})[key] = None

    def _unindex(self, vip: str, member: Member) -> None:
        key, endpoint = (vip, member.name), (member.address, member.port)
        self._members_named.pop(key, None)
        keys = self._members_at.get(endpoint, {})
        keys.pop(key, None)
        if not keys:
            self._members_at.pop(endpoint, None)

    def set_config(
        self, config: Config, attachments: Callable[[Member], Attachment | None], now: float
    ) -> list[Datagram]:
        """Take a new model: re-target probes, drop allotments of changed VIPs, relay changed directives to agents."""
        old = {vip.name: vip for vip in self.config.vips}
        relays: list[Datagram] = []
        for vip in config.vips:
            previous = old.get(vip.name)
            if previous is None:
                self.spenders.pop(vip.name, None)
                continue
            diff = member_diff(previous, vip)
            if diff.same:
                continue
            self.spenders.pop(vip.name, None)
            for was, member in diff.changed:
                if member.health == "agent" and was.state != member.state:
                    relays += self._relay_target(vip, member, now)
        for name in set(old) - {vip.name for vip in config.vips}:
            self.spenders.pop(name, None)
        self.config = config
        targets = []
        for vip in config.vips:
            for member in vip.members:
                where = attachments(member) if member.health == "probe" else None
                if where is not None:
                    targets.append(
                        ProbeTarget(
                            vip.name,
                            member.name,
                            vip.address,
                            vip.mac,
                            member.address,
                            member.port,
                            where.mac,
                            where.dpid,
                            where.port,
                        )
                    )
        if self.prober.set_targets(targets):
            self._probe_revision += 1
        return relays

    def _relay_target(self, vip: Vip, member: Member, now: float) -> list[Datagram]:
        """Ask the member's agent to set its row's target state (answered by a row change)."""
        datagrams: list[Datagram] = []
        for host, row in self.cache.rows_for(member.address, member.port, vip.address, vip.port, vip.protocol):
            datagrams += self._encode(self.cache.set_target(host.host_id, row.app_id, member.state), now, host.host_id)
        return datagrams

    def _encode(self, outgoing: list[Any], now: float, host_id: str = "") -> list[Datagram]:
        """Encode cache messages with our source id and sequence numbers, each under its host's key (the body's
        ``host_id``, else ``host_id``); a message to a host we have no key for is not sent."""
        datagrams = []
        for message in outgoing:
            kid = message.body.get("host_id", host_id)
            key = self.keys.key_for(kid) if self.keys is not None else None
            if key is not None:
                data = encode(key, message.type, self.cache.src, self.seq.next(), now, message.body, kid=kid)
                datagrams.append((message.addr, data))
        return datagrams

    def candidates(self, vip: Vip, has_mac: Callable[[Member], bool]) -> list[Candidate]:
        """Every member of ``vip`` with its capacity, load and whether it may take new connections now.

        Kept per VIP service while the health state, the fabric and ``has_mac`` stay the same, and patched for the
        members a new model changed (``has_mac`` must answer from the member and the config's fabric alone).
        """
        world = (self._probe_revision, self.cache.revision, self._fabric_revision, has_mac)
        return self._candidates.candidates(vip, world, lambda v, member: self.candidate(v, member, has_mac))

    def candidate(self, vip: Vip, member: Member, has_mac: Callable[[Member], bool]) -> Candidate:
        """One member's capacity, load and whether it may take new connections now (and if not, why)."""
        capacity, load, reported, eligible, reason = float(member.weight), 0.0, None, True, ""
        if member.health == "agent":
            alive, row = self.cache.endpoint_status(member.address, member.port, vip.address, vip.port, vip.protocol)
            eligible, reason = agent_eligibility(alive, row)
            if row is not None:
                capacity, load, reported = row.capacity, row.load, row.target
                if reason.startswith("target"):
                    eligible, reason = True, ""
        elif member.health == "probe":
            health = self.prober.health(vip.name, member.name)
            if health != "ok":
                eligible, reason = False, f"probe health {health}"
        elif member.weight == 0:
            eligible, reason = False, "weight 0"
        target = effective_target(member.state, reported)
        if eligible and target != "active":
            eligible, reason = False, f"target {target}"
        if eligible and not has_mac(member):
            eligible, reason = False, "no MAC known for the member"
        return Candidate(member.name, member.address, member.port, capacity, load, eligible, reason)

    def session_eligible(self, vip: Vip, member: Member, has_mac: Callable[[Member], bool]) -> bool:
        """Whether an existing session may stay on ``member``: eligible, or draining with sessions kept."""
        candidate = self.candidate(vip, member, has_mac)
        return candidate.eligible or (vip.draining_keeps_sessions and candidate.reason == "target draining")

    def needs_warm_cache(self, vip: Vip) -> bool:
        """Whether the VIP's allotment depends on agent reports (and so waits for the warm-up gate).

        Remembered per model: every pick and every tick asks, and a 20,000-member pool takes a millisecond to scan.
        """
        kept = self._agent_vips.get(vip.name)
        if kept is not None and kept[0] is vip:
            return kept[1]
        needs = any(member.health == "agent" for member in vip.members)
        self._agent_vips[vip.name] = (vip, needs)
        return needs

    def allotment_for(self, vip: Vip, has_mac: Callable[[Member], bool], now: float) -> Allotment:
        """A freshly computed allotment (FIG. 18 response 1804) for the VIP service."""
        self.generations[vip.name] += 1
        service = Service(vip.address, vip.port, vip.protocol, "")
        return compute_allotment(
            service,
            self.candidates(vip, has_mac),
            vip.allotment.scheme,
            vip.allotment.tokens,
            vip.allotment.duration_ms,
            self.generations[vip.name],
            now,
        )

    def pick(self, vip: Vip, has_mac: Callable[[Member], bool], now: float) -> str | None:
        """The member for the next new connection of ``vip``, or None (counted in ``refused`` by reason)."""
        if self.needs_warm_cache(vip) and not self.cache.warm(now):
            self.refused["warming_up"] += 1
            return None
        spender = self.spenders.get(vip.name)
        if spender is None:
            spender = self.spenders[vip.name] = AllotmentSpender()
        if spender.allotment is None or spender.needs_refresh(now):
            spender.install(self.allotment_for(vip, has_mac, now))
        name = spender.pick(now)
        if name is None:
            self.refused["no_member"] += 1
        return name

    def reassess(self, has_mac: Callable[[Member], bool], vips: list[Vip] | None = None) -> None:
        """Re-check eligibility now: an allotment that names an ineligible member, or leaves out an eligible one, is
        revoked at once and re-computed at the next new connection."""
        for vip in self.config.vips if vips is None else vips:
            self._reassess_members(has_mac, vip, vip.members)

    def _reassess_changed(self, has_mac: Callable[[Member], bool], changed: Iterable[tuple[Vip, Member]]) -> None:
        """Re-check only these members (those whose eligibility may have changed), each VIP once.

        The cost follows the members that changed, not the VIPs' sizes: the first sync of 10,000 hosts is linear.
        """
        by_vip: dict[str, tuple[Vip, list[Member]]] = {}
        for vip, member in changed:
            by_vip.setdefault(vip.name, (vip, []))[1].append(member)
            self.reassessed[(vip.name, member.name)] = (vip, member)
        for vip, members in by_vip.values():
            self._reassess_members(has_mac, vip, members)

    def take_reassessed(self) -> list[tuple[Vip, Member]]:
        """The members whose eligibility may have changed since the last call (each once), and forget them."""
        taken = list(self.reassessed.values())
        self.reassessed.clear()
        return taken

    def _reassess_members(self, has_mac: Callable[[Member], bool], vip: Vip, members: Iterable[Member]) -> None:
        """Revoke the members of the VIP's live allotment that are no longer eligible; drop the allotment when it
        leaves out one that now is (it is re-computed at the next new connection)."""
        spender = self.spenders.get(vip.name)
        if spender is None or spender.allotment is None:
            return
        shares = spender.allotment.values
        eligible: set[str] = set()
        allotted: set[str] = set()
        for member in members:
            if self.candidate(vip, member, has_mac).eligible:
                eligible.add(member.name)
            if member.name in shares:
                allotted.add(member.name)
        if allotted - eligible:
            spender.revoke(allotted - eligible)
        if eligible - allotted:
            del self.spenders[vip.name]

    def _members_at_endpoints(self, endpoints: Iterable[Endpoint]) -> list[tuple[Vip, Member]]:
        """Every (VIP, member) at one of these (pip, pport) endpoints, from the index (no scan of the config)."""
        return self._members_named_in(key for endpoint in endpoints for key in self._members_at.get(endpoint, ()))

    def _members_named_in(self, names: Iterable[MemberKey]) -> list[tuple[Vip, Member]]:
        """Every (VIP, member) of these (VIP name, member name) pairs that the config still has."""
        return [(self._vips[name[0]], self._members_named[name]) for name in names if name in self._members_named]

    def member_named(self, vip: str, member: str) -> Member | None:
        """The member called ``member`` of the VIP service called ``vip``, from the index (no scan of the pool)."""
        return self._members_named.get((vip, member))

    def handle_datagram(
        self, data: bytes, addr: tuple[str, int], now: float, has_mac: Callable[[Member], bool]
    ) -> tuple[list[Datagram], Message | None]:
        """Verify and apply one agent datagram; return the replies, and a verified session message for the caller."""
        if self.verifier is None:
            return [], None
        message = self.verifier.verify(data, now)
        if message is None:
            return [], None
        if message.type in SESSION_TYPES:
            return [], message
        applied = self.cache.apply(message, addr, now)
        changed = set(applied.changed)
        for event in applied.events:
            changed |= set(event.endpoints)
        if changed:
            self._reassess_changed(has_mac, self._members_at_endpoints(changed))
        return self._encode(applied.outgoing, now), None

    def handle_probe_reply(
        self, segment: TcpSegment, dpid: int, in_port: int, has_mac: Callable[[Member], bool]
    ) -> list[ProbeSend] | ProbeReject:
        """A reply to a controller probe punted by ``dpid`` from ``in_port``: frames to send, or why it was ignored."""
        result = self.prober.on_reply(segment, dpid, in_port)
        if isinstance(result, ProbeReject):
            return result
        sends, changed = result
        if changed:
            self._revision += 1
            self._probe_revision += 1
            self._reassess_changed(has_mac, self._members_named_in(changed))
        return sends

    @property
    def revision(self) -> tuple[int, int]:
        """Changes with anything a candidate is computed from: the config, a row, a host's status, a probe's health.

        An allotment computed at one revision holds while the revision does not change (the warm-up gate aside).
        """
        return self._revision, self.cache.revision

    def tick(
        self, now: float, live: Callable[[str, str], int], has_mac: Callable[[Member], bool]
    ) -> tuple[list[Datagram], list[ProbeSend]]:
        """Periodic work: host liveness, probes due, postulates with current states.

        A round of postulates starts every ``postulate_period``, and as soon as a current state or the set of warm
        hosts changed; each tick sends at most ``POSTULATES_PER_TICK`` of them, the rest on the next ticks.
        """
        events = self.cache.tick(now)
        changed: set[tuple[str, int]] = set()
        for event in events:
            changed |= set(event.endpoints)
        sends, probe_changed = self.prober.due(now)
        if probe_changed:
            self._revision += 1
            self._probe_revision += 1
        if changed or probe_changed:
            self._reassess_changed(has_mac, self._members_at_endpoints(changed) + self._members_named_in(probe_changed))
        current = self.current_by_host(live)
        warm_hosts = sorted(h.host_id for h in self.cache.hosts.values() if h.warm and h.status == "alive")
        if now >= self._next_postulate or self.current.take_changed() or warm_hosts != self._last_warm_hosts:
            self._next_postulate = now + self.config.controller.health.postulate_period
            self._last_warm_hosts = warm_hosts
            self.postulating.add(warm_hosts)
        datagrams: list[Datagram] = []
        if len(self.postulating):
            datagrams = self._encode(self.cache.postulates(current, now, self.postulating.take()), now)
        return datagrams, sends

    def current_by_host(self, live: Callable[[str, str], int]) -> dict[str, dict[str, str]]:
        """The current state this LBU applies to every agent-reported row, by host and app id."""
        self.current.touch(self._members_at_endpoints(self.cache.touched))
        self.cache.touched = set()
        self.current.refresh(self.cache, live)
        return self.current.by_host

    def member_state(self, vip: Vip, member: Member, live_connections: int) -> dict[str, Any]:
        """Target, current state and health source of one member (REST)."""
        reported = None
        health = "ok"
        if member.health == "agent":
            alive, row = self.cache.endpoint_status(member.address, member.port, vip.address, vip.port, vip.protocol)
            reported = row.target if row else None
            health = (row.health if alive else "host not alive") if row else "no row from any agent"
        elif member.health == "probe":
            health = self.prober.health(vip.name, member.name)
        target = effective_target(member.state, reported)
        return {
            "vip": vip.name,
            "member": member.name,
            "target": target,
            "configured_target": member.state,
            "reported_target": reported,
            "current": current_state(target, live_connections),
            "connections": live_connections,
            "health_source": member.health,
            "health": health,
            "app_id": app_id_of(vip.address, vip.port, vip.protocol, member.address, member.port),
        }

    def allotment_view(self, vip: Vip, has_mac: Callable[[Member], bool], now: float) -> dict[str, Any]:
        """The allotment in use (or the one that would be issued now), with the candidates' eligibility."""
        spender = self.spenders.get(vip.name)
        allotment = spender.allotment if spender and spender.allotment else None
        view = (
            allotment.as_dict()
            if allotment
            else dict(self.allotment_for(vip, has_mac, now).as_dict(), note="not issued yet: no connection so far")
        )
        view["candidates"] = [
            {
                "name": c.name,
                "endpoint": f"{c.pip}:{c.pport}",
                "capacity": c.capacity,
                "load": c.load,
                "eligible": c.eligible,
                "reason": c.reason,
            }
            for c in self.candidates(vip, has_mac)
        ]
        view["counters"] = dict(spender.counters) if spender else {}
        view["warm"] = self.cache.warm(now) if self.needs_warm_cache(vip) else True
        return view

    def stats(self) -> dict[str, Any]:
        """Counters: messages accepted by type and dropped by reason, cache activity, probes, refusals."""
        return {
            "messages": {
                "accepted": dict(self.verifier.accepted) if self.verifier else {},
                "dropped": dict(self.verifier.dropped) if self.verifier else {},
            },
            "cache": self.cache.counters,
            "hosts": {host_id: host.status for host_id, host in sorted(self.cache.hosts.items())},
            "probes": self.prober.as_dict(),
        }
