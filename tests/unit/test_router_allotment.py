"""The router's default choice follows the controller's allotment, and the configured weights until it has one."""

from __future__ import annotations

import asyncio
from collections import Counter

from nlb_sdn.config.routing import Pool
from nlb_sdn.router.allotment import AllotmentChooser, follow_allotments
from nlb_sdn.router.daemon import Service, ServiceMember
from tests.lib.polling import poll_until_async

SERVICE = Service(
    "web",
    "10.0.0.100",
    80,
    (
        ServiceMember("h1", "10.0.0.11", 80, weight=1),
        ServiceMember("h2", "10.0.0.12", 80, weight=1),
        ServiceMember("h3", "10.0.0.13", 80, weight=2),
    ),
    pools=(Pool(name="api", members=["h1", "h2"]),),
)


def picks(chooser: AllotmentChooser, pool: str | None, count: int) -> Counter[str]:
    """Which members ``count`` picks go to."""
    return Counter(chooser.pick(SERVICE, pool).name for _ in range(count))


def test_until_an_allotment_arrives_the_configured_weights_decide():
    assert picks(AllotmentChooser(), None, 40) == {"h1": 10, "h2": 10, "h3": 20}


def test_the_allotment_decides_and_members_it_leaves_out_get_nothing():
    chooser = AllotmentChooser()
    chooser.update("web", {"values": {"h2": 75, "h3": 25}, "excluded": {"h1": "target draining"}})
    assert picks(chooser, None, 40) == {"h2": 30, "h3": 10}
    assert picks(chooser, "api", 10) == {"h2": 10}
    chooser.update("web", {"values": {}})
    assert chooser.pick(SERVICE, "api") is None


def test_following_polls_every_vip_and_keeps_the_last_allotment_when_the_controller_is_away():
    chooser = AllotmentChooser()
    answers = [OSError("refused"), {"values": {"h1": 100}}]

    def fetch(vip: str) -> dict:
        answer = answers.pop(0) if answers else {"values": {"h1": 100}}
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def scenario() -> None:
        task = asyncio.create_task(follow_allotments(chooser, ["web"], fetch, period=0.01))
        await poll_until_async(lambda: chooser.values, timeout=2.0)
        task.cancel()

    asyncio.run(scenario())
    assert chooser.values == {"web": {"h1": 100}}
