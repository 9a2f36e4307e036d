"""Unit mixes as they happen, for the event log: a VIP starts mixing units when one of its agent members' agents
reports a capacity while static members are weighed by their weight, and stops when no such agent reports any more
(``health/units.py`` says why that is a mix).

Only VIPs that can mix (agent members and statically weighed ones) are watched. Each tick looks at the members the
H&L handler re-assessed since the last tick (a row that came or went, a host that died or came back) and, after a
config change, at every agent member of the watched VIPs; the cost follows what changed, not the fabric's size.
"""

from __future__ import annotations

from nlb_sdn.config import Config, Member, Vip
from nlb_sdn.core.context import CoreContext
from nlb_sdn.events import EventKind
from nlb_sdn.health.units import UnitMix, may_mix, unit_mix


class UnitMixWatch:
    """Records a ``warning`` event when a VIP starts mixing units at run time and a ``warning_cleared`` event when it
    stops; ``mixes`` holds the running ones."""

    def __init__(self, ctx: CoreContext) -> None:
        self.ctx = ctx
        self.mixes: dict[str, UnitMix] = {}
        """The VIPs mixing units now, by name."""
        self.reporting: dict[str, set[str]] = {}
        """The watched VIPs' agent members whose agents report now, by VIP name."""
        self._watched: dict[str, Vip] = {}
        self._config: Config | None = None

    def _reports(self, vip: Vip, member: Member) -> bool:
        """Whether an alive host reports ``member``'s row (the allotment then weighs it by the row's capacity)."""
        alive, row = self.ctx.health.cache.endpoint_status(
            member.address, member.port, vip.address, vip.port, vip.protocol
        )
        return alive and row is not None

    def _follow_config(self) -> set[str]:
        """After a config change: watch the VIPs that can mix, with who reports now; the VIPs to judge again."""
        config = self.ctx.config
        if config is self._config:
            return set()
        self._config = config
        self._watched = {vip.name: vip for vip in config.vips if may_mix(vip)}
        self.reporting = {
            name: {member.name for member in vip.members if member.health == "agent" and self._reports(vip, member)}
            for name, vip in self._watched.items()
        }
        return set(self._watched) | set(self.mixes)

    def check(self, now: float) -> None:
        """Follow this tick's re-assessed members; record the mixes that started and those that stopped."""
        due = self._follow_config()
        for vip, member in self.ctx.health.reassessed.values():
            watched = self._watched.get(vip.name)
            if watched is None or member.health != "agent":
                continue
            reporting = self.reporting[vip.name]
            if self._reports(watched, member):
                reporting.add(member.name)
            else:
                reporting.discard(member.name)
            due.add(vip.name)
        for name in sorted(due):
            self._judge(name, now)

    def _judge(self, name: str, now: float) -> None:
        """Record the VIP's mix starting or stopping; a running mix whose members change stays one warning."""
        vip = self._watched.get(name)
        mix = unit_mix(vip, self.reporting[name]) if vip is not None else None
        before = self.mixes.pop(name, None)
        if mix is not None and mix.running:
            self.mixes[name] = mix
            if before is None:
                self.ctx.events.record(
                    EventKind.WARNING,
                    now,
                    name,
                    warning=mix.warning,
                    reported=list(mix.reported),
                    static=list(mix.static),
                )
        elif before is not None:
            self.ctx.events.record(EventKind.WARNING_CLEARED, now, name, warning=before.warning)
