"""What a new model changed in one VIP service's member pool, found in one cheap pass (issue 14: 20,000 members).

A REST edit or a reload parses a whole new :class:`~nlb_sdn.config.Config`, so every member is a new object even when
one weight changed. Comparing two 20,000-member VIPs with pydantic's ``==`` calls ``Member.__eq__`` per member, and
each consumer of a config change (health, switch dispatch, conntrack, session revocation) did that or more. Here
the pools are compared once, field dicts against field dicts in C (``map``) when the members kept their places,
and every consumer asks :func:`member_diff` for the same answer, remembered for the last few pairs of models.
"""

from __future__ import annotations

import operator
from collections import OrderedDict
from dataclasses import dataclass
from itertools import compress, count, islice

from nlb_sdn.config import Member, Vip

MEMO_SIZE = 8
"""Pairs of models whose diff is remembered (one config change asks for each changed VIP a few times)."""
_fields = operator.attrgetter("__dict__")
_name = operator.attrgetter("name")


@dataclass(frozen=True, slots=True)
class MemberDiff:
    """How one VIP service's members changed between two models, each member named once."""

    added: tuple[Member, ...]
    """Members of the new model whose name the old one lacks, in the new model's order."""
    removed: tuple[Member, ...]
    """Members of the old model whose name the new one lacks, in the old model's order."""
    changed: tuple[tuple[Member, Member], ...]
    """(old, new) of members that kept their name but not all their fields, in the new model's order."""
    settings_changed: bool
    """Whether anything of the VIP service other than its members changed."""

    @property
    def same(self) -> bool:
        """Whether the two models are equal (what pydantic's ``==`` would say, without comparing member by member)."""
        return not (self.added or self.removed or self.changed or self.settings_changed)

    @property
    def touched(self) -> frozenset[str]:
        """Names of every member added, removed or changed."""
        return frozenset(m.name for m in (*self.added, *self.removed, *(new for _old, new in self.changed)))


_memo: OrderedDict[tuple[int, int], tuple[Vip, Vip, MemberDiff]] = OrderedDict()


def member_diff(old: Vip | None, new: Vip) -> MemberDiff:
    """The member changes from ``old`` (None: the VIP service is new) to ``new``; remembered per pair of models."""
    if old is None:
        return MemberDiff(tuple(new.members), (), (), True)
    key = (id(old), id(new))
    found = _memo.get(key)
    if found is not None and found[0] is old and found[1] is new:
        return found[2]
    diff = _compute(old, new)
    _memo[key] = (old, new, diff)
    while len(_memo) > MEMO_SIZE:
        _memo.popitem(last=False)
    return diff


def _settings_changed(old: Vip, new: Vip) -> bool:
    """Whether any field but ``members`` differs."""
    if old is new:
        return False
    old_fields, new_fields = old.__dict__, new.__dict__
    return any(old_fields[name] != new_fields[name] for name in old_fields if name != "members")


def _aligned(before: list[Member], after: list[Member], limit: int) -> tuple[int, list[tuple[Member, Member]]]:
    """Walk both pools place by place, at most ``limit`` places: how many places hold the same names, and the
    (old, new) pairs among them whose fields differ.

    The fields are compared in C (``map``); Python sees only the places that differ, so a pool of 20,000 with one
    change costs one pass of dict comparisons.
    """
    changed: list[tuple[Member, Member]] = []
    differing = map(operator.ne, map(_fields, islice(before, limit)), map(_fields, islice(after, limit)))
    for index in compress(count(), differing):
        was, member = before[index], after[index]
        if was.name != member.name:
            return index, changed
        changed.append((was, member))
    return limit, changed


def _compute(old: Vip, new: Vip) -> MemberDiff:
    """Members that kept their places at the start and the end are compared place by place; the few in between
    (those around an insertion or a removal, or every one after a reordering) by name."""
    before, after = old.members, new.members
    settings = _settings_changed(old, new)
    if before is after:
        return MemberDiff((), (), (), settings)
    shorter = min(len(before), len(after))
    head, changed = _aligned(before, after, shorter)
    tail, tail_changed = _aligned(before[::-1], after[::-1], shorter - head)
    middle_before, middle_after = before[head : len(before) - tail], after[head : len(after) - tail]
    old_named = dict(zip(map(_name, middle_before), middle_before, strict=True))
    new_names = set(map(_name, middle_after))
    added: list[Member] = []
    for member in middle_after:
        was = old_named.get(member.name)
        if was is None:
            added.append(member)
        elif was is not member and was.__dict__ != member.__dict__:
            changed.append((was, member))
    changed += reversed(tail_changed)
    removed = tuple(member for member in middle_before if member.name not in new_names)
    return MemberDiff(tuple(added), removed, tuple(changed), settings)
