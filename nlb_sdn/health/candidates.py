"""Each VIP service's candidates (FIG. 18 inputs), kept between allotments and patched member by member.

Building the candidate of each of 20,000 members (its health source, target and MAC) took tens of milliseconds, and
a weight change of one member rebuilt them all. A VIP service's list is kept while nothing it is computed from
changes (the health state, the MAC lookup and the fabric it answers from, the VIP's own settings); when only its
members changed, only the members :func:`~nlb_sdn.config.diff.member_diff` names are computed again.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass

from nlb_sdn.config import Member, Vip
from nlb_sdn.config.diff import member_diff
from nlb_sdn.health.allotment import Candidate

CandidateOf = Callable[[Vip, Member], Candidate]
"""Computes one member's candidate."""


@dataclass(slots=True)
class _Kept:
    """One VIP service's candidates, for one model and one state of what they are computed from."""

    vip: Vip
    world: tuple[Hashable, ...]
    named: dict[str, Candidate]
    ordered: list[Candidate]


class CandidateCache:
    """The candidates of each VIP service, by name, valid for one ``world`` (what else a candidate depends on)."""

    def __init__(self) -> None:
        self._kept: dict[str, _Kept] = {}
        self.computed = 0
        """Candidates computed one by one so far (the tests count them)."""

    def candidates(self, vip: Vip, world: tuple[Hashable, ...], candidate_of: CandidateOf) -> list[Candidate]:
        """Every member's candidate in the model's order: kept, patched for the members that changed, or built."""
        kept = self._kept.get(vip.name)
        if kept is not None and kept.world == world:
            if kept.vip is vip:
                return list(kept.ordered)
            diff = member_diff(kept.vip, vip)
            if not diff.settings_changed:
                return self._patch(kept, vip, candidate_of)
        named = {member.name: candidate_of(vip, member) for member in vip.members}
        self.computed += len(named)
        kept = self._kept[vip.name] = _Kept(vip, world, named, list(named.values()))
        return list(kept.ordered)

    def _patch(self, kept: _Kept, vip: Vip, candidate_of: CandidateOf) -> list[Candidate]:
        """Recompute the members that came or changed since the kept model, drop those that went."""
        diff = member_diff(kept.vip, vip)
        named = kept.named
        for member in diff.removed:
            named.pop(member.name, None)
        fresh = [*diff.added, *(new for _old, new in diff.changed)]
        for member in fresh:
            named[member.name] = candidate_of(vip, member)
        self.computed += len(fresh)
        kept.vip = vip
        kept.ordered = [named[member.name] for member in vip.members]
        return list(kept.ordered)

    def forget(self, names: set[str]) -> None:
        """Drop the kept candidates of VIP services no longer configured."""
        for name in [name for name in self._kept if name not in names]:
            del self._kept[name]
