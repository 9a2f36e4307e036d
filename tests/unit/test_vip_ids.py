"""VIP service ids (in cookies and group ids) can be planned before a change and restored after a restart."""

from __future__ import annotations

import random

from nlb_sdn.config import Vip
from nlb_sdn.core.vips import VipRegistry
from nlb_sdn.store.operator import seed_ids
from tests.lib.configs import web_config, web_member


def vip(name: str, last_octet: int) -> Vip:
    """A VIP service ``name`` on 10.0.1.<last_octet>:80 without members."""
    return Vip(name=name, address=f"10.0.1.{last_octet}", port=80)


def test_plan_gives_the_ids_apply_then_gives() -> None:
    rng = random.Random(11)
    registry = VipRegistry()
    for _ in range(300):
        names = rng.sample([f"v{i}" for i in range(12)], rng.randint(0, 8))
        vips = [vip(name, rng.choice((1, 2)) * 16 + int(name[1:])) for name in names]
        planned = registry.plan(vips)
        registry.apply(vips, lambda state: None)
        assert registry.ids() == planned


def test_preferred_ids_are_given_to_the_vips_added_next_and_only_then() -> None:
    registry = VipRegistry()
    registry.prefer({"b": 7, "a": 3})
    registry.apply([vip("a", 1), vip("b", 2), vip("c", 3)], lambda state: None)
    assert registry.ids() == {"a": 3, "b": 7, "c": 1}
    registry.apply([vip("d", 4)], lambda state: None)
    assert registry.ids() == {"d": 1}, "a preference lasts one apply"


def test_a_fresh_registry_gives_the_seed_ids() -> None:
    config = web_config([web_member(1)])
    vips = [*config.vips, vip("x", 9), vip("y", 8)]
    registry = VipRegistry()
    registry.apply(vips, lambda state: None)
    assert registry.ids() == seed_ids(config.model_copy(update={"vips": vips}))
