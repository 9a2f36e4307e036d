"""Unit mixes: a VIP whose allotment weighs some members by the capacity their agents report and others by their
static weight (issue 13).

The allotment (``handler.py:HealthHandler.candidate``, ``allotment.py:compute_allotment``) gives every eligible
member a share of ``max(0, capacity - load)``, one number whatever its source:

- a ``health: agent`` member whose host is alive and reports its row: the row's ``capacity`` and ``load`` (the
  agent's units: connections, requests, a load command's number, ...);
- a ``static`` or ``probe`` member with a positive ``weight``: the weight as capacity, load 0;
- an agent member whose agent does not report (no row, or its host is not alive) and a static member of weight 0
  get no share (not eligible), whatever their weight: they mix nothing.

So a VIP mixes units at run time exactly when at least one of its agent members reports while at least one static
or probe member has a positive weight; its config alone says only that it will once an agent reports. Pure: the
caller says which agent members report (the H&L cache, or the members' state views in the REST API).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from nlb_sdn.config import Member, Vip


def weighed_statically(member: Member) -> bool:
    """Whether the allotment weighs ``member`` by its static weight (not agent-monitored, weight above 0)."""
    return member.health != "agent" and member.weight > 0


@dataclass(frozen=True, slots=True)
class UnitMix:
    """A VIP weighing ``reported`` members by agent capacity and ``static`` ones by weight; ``running``: the agents
    report now (else the config says it will happen once they do)."""

    vip: str
    reported: tuple[str, ...]
    static: tuple[str, ...]
    running: bool

    @property
    def warning(self) -> str:
        """The operator's warning, naming the members of both kinds."""
        reported, static = ", ".join(self.reported), ", ".join(self.static)
        if self.running:
            return (
                f"vip {self.vip!r} mixes units: members {reported} are weighed by the capacity their agents report "
                f"and members {static} by their static weight; the shares compare the two as one unit"
            )
        return (
            f"vip {self.vip!r} will mix units once an agent reports: members {reported} are to be weighed by the "
            f"capacity their agents report and members {static} by their static weight; the shares would compare "
            "the two as one unit"
        )


def unit_mix(vip: Vip, reporting: Collection[str]) -> UnitMix | None:
    """The VIP's unit mix, given the names of its agent members whose agents report now; None when it has none.

    Running when a reporting agent member meets a statically weighed one; configured only when no agent reports
    yet."""
    static = tuple(member.name for member in vip.members if weighed_statically(member))
    agents = [member.name for member in vip.members if member.health == "agent"]
    if not static or not agents:
        return None
    running = tuple(name for name in agents if name in reporting)
    if running:
        return UnitMix(vip.name, running, static, running=True)
    return UnitMix(vip.name, tuple(agents), static, running=False)


def may_mix(vip: Vip) -> bool:
    """Whether ``vip`` can mix units at all (agent members and statically weighed ones): the only VIPs to watch."""
    return unit_mix(vip, ()) is not None
