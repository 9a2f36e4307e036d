"""The router's default choice follows the controller's allotment (FIG. 18): with no rule deciding, the member.

The controller computes each VIP service's allotment from its members' health, load and drain state (agents' H&L
reports, controller probes, REST states). The router reads it (``GET /v1/vips/{vip}/allotment``) every ``period``
seconds and spreads undecided requests over the pool's members in proportion to it, so a failed, drained or loaded
member gets no (or fewer) new connections; while it has no allotment from the controller it uses the configured
weights.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from nlb_sdn.router.daemon import Service, ServiceMember, WeightedRoundRobinChooser

log = logging.getLogger("nlb_sdn.router.allotment")
SYNC_PERIOD = 1.0


class AllotmentChooser:
    """Smooth weighted round robin over a pool's members by the controller's allotment values."""

    def __init__(self) -> None:
        self.values: dict[str, dict[str, int]] = {}
        self._configured = WeightedRoundRobinChooser()
        self._allotted = WeightedRoundRobinChooser()

    def update(self, vip: str, allotment: dict[str, Any]) -> None:
        """Take a ``GET /v1/vips/{vip}/allotment`` answer: its values by member name (absent members get 0)."""
        self.values[vip] = {str(name): int(value) for name, value in allotment["values"].items()}

    def pick(self, service: Service, pool: str | None) -> ServiceMember | None:
        """The next member of ``pool`` by the allotment, or by the configured weights until an allotment arrived."""
        values = self.values.get(service.name)
        if values is None:
            return self._configured.pick(service, pool)
        return self._allotted.pick_weighted(
            service, pool, {m.name: values.get(m.name, 0) for m in service.candidates(pool)}
        )


async def follow_allotments(
    chooser: AllotmentChooser, vips: list[str], fetch: Callable[[str], dict[str, Any]], period: float = SYNC_PERIOD
) -> None:
    """Refresh the chooser from ``fetch(vip)`` (blocking, run in a thread) every ``period`` seconds, for ever."""
    while True:
        for vip in vips:
            try:
                chooser.update(vip, await asyncio.to_thread(fetch, vip))
            except Exception as exc:  # noqa: BLE001 - keep the last allotment while the controller is away
                log.warning("allotment of %s: %s", vip, exc)
        await asyncio.sleep(period)
