"""The verbs every manager of the core answers, as Faucet's ValveManagerBase does for its managers."""

from __future__ import annotations

from typing import Any


class Manager:
    """One concern of the core: it owns its state and the tables it writes, and answers these verbs.

    The dispatcher asks every manager, in a fixed order, for what a (re)connecting switch needs, lets each one
    forget what has timed out, and gathers their counters. Managers add verbs of their own for the events they own.
    """

    def switch_flows(self, dpid: int) -> list[Any]:
        """What a (re)connecting switch needs from this manager (its base entries, groups and paths)."""
        del dpid
        return []

    def expire(self, now: float) -> None:
        """Forget what has timed out by ``now``."""
        del now

    def stats(self) -> dict[str, Any]:
        """This manager's counters, for the core's ``stats``."""
        return {}
