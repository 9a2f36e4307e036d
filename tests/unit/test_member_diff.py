"""config/diff.py: one VIP's member changes, found place by place where the pools line up and by name elsewhere."""

from __future__ import annotations

from typing import Any

from nlb_sdn.config import Vip
from nlb_sdn.config.diff import member_diff


def vip(*members: tuple[str, int], **settings: Any) -> Vip:
    """A VIP of members named ``name`` with weight ``weight``, each at its own address."""
    pool = [{"name": name, "address": f"10.0.1.{ord(name[0])}", "port": 80, "weight": w} for name, w in members]
    return Vip.model_validate({"name": "web", "address": "10.0.0.100", "port": 80, "members": pool, **settings})


def names(diff_part: Any) -> list[str]:
    return [item[1].name if isinstance(item, tuple) else item.name for item in diff_part]


def test_a_weight_change_names_that_member_only():
    diff = member_diff(vip(("a", 1), ("b", 1), ("c", 1)), vip(("a", 1), ("b", 5), ("c", 1)))
    assert names(diff.changed) == ["b"] and not diff.added and not diff.removed and not diff.settings_changed
    assert [(old.weight, new.weight) for old, new in diff.changed] == [(1, 5)] and not diff.same


def test_an_insertion_and_a_removal_shift_the_places_but_name_only_their_members():
    before = vip(("a", 1), ("b", 1), ("c", 1), ("d", 1))
    inserted = member_diff(before, vip(("a", 1), ("x", 1), ("b", 1), ("c", 2), ("d", 1)))
    assert names(inserted.added) == ["x"] and names(inserted.changed) == ["c"] and not inserted.removed
    removed = member_diff(before, vip(("a", 3), ("c", 1), ("d", 1)))
    assert names(removed.removed) == ["b"] and names(removed.changed) == ["a"] and not removed.added
    assert removed.touched == {"a", "b"}


def test_a_reordered_pool_is_diffed_by_name_and_settings_apart():
    diff = member_diff(vip(("a", 1), ("b", 1), ("c", 1)), vip(("c", 1), ("a", 2), ("b", 1), idle_timeout=9))
    assert names(diff.changed) == ["a"] and not diff.added and not diff.removed and diff.settings_changed


def test_equal_models_are_the_same_and_a_new_vip_adds_every_member():
    assert member_diff(vip(("a", 1)), vip(("a", 1))).same
    assert names(member_diff(None, vip(("a", 1), ("b", 1))).added) == ["a", "b"]


def test_the_diff_of_one_pair_of_models_is_computed_once():
    old, new = vip(("a", 1)), vip(("a", 2))
    assert member_diff(old, new) is member_diff(old, new)
