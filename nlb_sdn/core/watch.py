"""Member changes for the event log: each tick compares some members' health and state with what was last seen.

A tick looks only at a bounded number of members (:data:`WATCH_PER_TICK`), so a fabric of 10,000 hosts does not
stall the loop: first those whose eligibility the H&L handler re-assessed since the last tick, and the draining ones
(``draining`` turns ``drained`` with the last connection), then a sweep of :data:`SWEEP_PER_TICK` members in turn,
which catches any other change within a few ticks.
"""

from __future__ import annotations

from nlb_sdn.config import Config, Member, Vip
from nlb_sdn.core.context import CoreContext
from nlb_sdn.core.health import HealthManager
from nlb_sdn.events import EventKind

Seen = tuple[str, str]
"""A member's (health, current state) as last seen."""
MemberKey = tuple[str, str]
"""(VIP name, member name)."""
WATCH_PER_TICK = 1000
"""At most this many members are looked at in one tick; the rest wait for the next."""
SWEEP_PER_TICK = 64
"""Members looked at in turn each tick, whatever changed."""


class MemberWatch:
    """Records a ``health`` event when a member's health changes and a ``state`` event when its current state does.

    The first sight of a member (at start, or once added) is no change; a member that leaves the model is forgotten
    (its removal is the REST edit's event).
    """

    def __init__(self, ctx: CoreContext, health: HealthManager) -> None:
        self.ctx = ctx
        self.health = health
        self.seen: dict[MemberKey, Seen] = {}
        self.pending: dict[MemberKey, tuple[Vip, Member]] = {}
        """Members to look at, oldest first."""
        self._config: Config | None = None
        self._members: list[tuple[Vip, Member]] = []
        self._draining: list[tuple[Vip, Member]] = []
        self._sweep = 0

    def _follow_config(self) -> None:
        """After a config change: index its members, look at every one of them, forget the removed ones."""
        config = self.ctx.config
        if config is self._config:
            return
        self._config = config
        self._members = [(vip, member) for vip in config.vips for member in vip.members]
        self._draining = [(vip, member) for vip, member in self._members if member.state == "draining"]
        keys = {(vip.name, member.name) for vip, member in self._members}
        self.seen = {key: seen for key, seen in self.seen.items() if key in keys}
        self.pending = {key: pair for key, pair in self.pending.items() if key in keys}
        for vip, member in self._members:
            self.pending[(vip.name, member.name)] = (vip, member)

    def _due(self) -> list[tuple[Vip, Member]]:
        """This tick's members: re-assessed and draining ones first, then the sweep's, at most WATCH_PER_TICK."""
        for vip, member in [*self.ctx.health.reassessed.values(), *self._draining]:
            self.pending[(vip.name, member.name)] = (vip, member)
        due: dict[MemberKey, tuple[Vip, Member]] = {}
        for key in list(self.pending)[:WATCH_PER_TICK]:
            due[key] = self.pending.pop(key)
        if self._members:
            for offset in range(min(SWEEP_PER_TICK, len(self._members))):
                vip, member = self._members[(self._sweep + offset) % len(self._members)]
                due.setdefault((vip.name, member.name), (vip, member))
            self._sweep = (self._sweep + SWEEP_PER_TICK) % len(self._members)
        return list(due.values())

    def check(self, now: float) -> None:
        """Look at this tick's members; record what changed since they were last seen."""
        self._follow_config()
        for vip, member in self._due():
            view = self.ctx.health.member_state(vip, member, self.health.live(vip.name, member.name))
            key, current = (vip.name, member.name), (str(view["health"]), str(view["current"]))
            before = self.seen.get(key)
            self.seen[key] = current
            if before is None:
                continue
            if before[0] != current[0]:
                self.ctx.events.record(
                    EventKind.HEALTH, now, vip.name, member=member.name, before=before[0], after=current[0]
                )
            if before[1] != current[1]:
                self.ctx.events.record(
                    EventKind.STATE, now, vip.name, member=member.name, before=before[1], after=current[1]
                )
