"""Member changes for the event log: each tick compares every member's health and state with the last tick's."""

from __future__ import annotations

from nlb_sdn.core.context import CoreContext
from nlb_sdn.core.health import HealthManager
from nlb_sdn.events import EventKind

Seen = tuple[str, str]
"""A member's (health, current state) as last seen."""


class MemberWatch:
    """Records a ``health`` event when a member's health changes and a ``state`` event when its current state does.

    The first sight of a member (at start, or once added) is no change; a member that leaves the model is forgotten
    (its removal is the REST edit's event).
    """

    def __init__(self, ctx: CoreContext, health: HealthManager) -> None:
        self.ctx = ctx
        self.health = health
        self.seen: dict[tuple[str, str], Seen] = {}

    def check(self, now: float) -> None:
        """Compare every member with the last check; record what changed."""
        seen: dict[tuple[str, str], Seen] = {}
        for vip in self.ctx.config.vips:
            for member in vip.members:
                view = self.health.member_state(vip.name, member.name)
                key, current = (vip.name, member.name), (str(view["health"]), str(view["current"]))
                seen[key] = current
                before = self.seen.get(key)
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
        self.seen = seen
