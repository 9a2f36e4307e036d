"""The current state this LBU reports to every agent (postulates 1512), kept up to date member by member.

Rebuilding it for every agent-reported row on every tick held the controller's loop for over 100 ms at 10,000 hosts.
Here a member's rows are looked at again only when its config or its endpoint's rows changed, and on every tick only
while one of its rows is draining (its current state then follows its live connections). Postulates go out in
batches of ``POSTULATES_PER_TICK``, the rest carried over to the next ticks, so no tick encodes 10,000 at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from itertools import islice

from nlb_sdn.config import Config, Member, Vip
from nlb_sdn.health.cache import HLCache

POSTULATES_PER_TICK = 500
"""Postulates encoded by one tick at most; a round to 10,000 hosts takes 20 ticks (5 s, one postulate period)."""
REFRESH_PER_TICK = 1000
"""Changed members looked at again by one tick at most (a config change touches them all); the rest wait a tick."""
MemberKey = tuple[str, str]
"""``(VIP name, member name)``."""
RowKey = tuple[str, str]
"""``(host id, app id)``."""
DRAINING = "draining"
TARGET_ORDER = {"active": 0, DRAINING: 1, "inactive": 2}
"""Targets from the least to the most restrictive."""


def effective_target(configured: str, reported: str | None) -> str:
    """The more restrictive of the operator's target (config/REST) and the host's own (its agent row)."""
    if reported is None or TARGET_ORDER.get(reported, 0) <= TARGET_ORDER[configured]:
        return configured
    return reported


def current_state(target: str, live_connections: int) -> str:
    """The current load-balancing state: ``draining`` turns ``drained`` once no connection of it is left."""
    if target == DRAINING:
        return "drained" if live_connections == 0 else DRAINING
    return target


class CurrentStates:
    """Every agent-reported row's current state by host and app id, refreshed only where something changed."""

    def __init__(self) -> None:
        self.by_host: dict[str, dict[str, str]] = {}
        """The current state of every agent-reported row, by host id and app id."""
        self.changed = False
        """Whether ``by_host`` changed since the last :meth:`take_changed`."""
        self._members: dict[MemberKey, tuple[Vip, Member]] = {}
        self._rows_of: dict[MemberKey, list[RowKey]] = {}
        self._draining: set[MemberKey] = set()
        self._dirty: dict[MemberKey, None] = {}

    def set_config(self, config: Config) -> None:
        """A new model: every agent member is looked at again at the next refresh; the others' rows go."""
        self._members = {
            (vip.name, member.name): (vip, member)
            for vip in config.vips
            for member in vip.members
            if member.health == "agent"
        }
        self._dirty = dict.fromkeys([*self._rows_of, *self._members])

    def touch(self, members: Iterable[tuple[Vip, Member]]) -> None:
        """These members' rows may have changed (rows added, deleted, or their target changed)."""
        self._dirty.update(dict.fromkeys((vip.name, member.name) for vip, member in members))

    @property
    def pending(self) -> int:
        """Touched members not looked at yet."""
        return len(self._dirty)

    def refresh(self, cache: HLCache, live: Callable[[str, str], int], limit: int = REFRESH_PER_TICK) -> None:
        """Bring up to ``limit`` touched members (the first touched first), and every one with a draining row, up to
        date; the other touched members wait for the next refresh."""
        batch = list(islice(self._dirty, limit))
        for key in batch:
            del self._dirty[key]
        for key in {*batch, *self._draining}:
            self._refresh_member(key, cache, live)

    def take_changed(self) -> bool:
        """Whether anything changed since the last call (and reset that)."""
        changed, self.changed = self.changed, False
        return changed

    def _refresh_member(self, key: MemberKey, cache: HLCache, live: Callable[[str, str], int]) -> None:
        """Replace one member's rows' current states."""
        before: dict[RowKey, str] = {}
        for host_id, app_id in self._rows_of.pop(key, ()):
            states = self.by_host.get(host_id, {})
            if app_id in states:
                before[(host_id, app_id)] = states.pop(app_id)
            if not states:
                self.by_host.pop(host_id, None)
        self._draining.discard(key)
        after: dict[RowKey, str] = {}
        found = self._members.get(key)
        if found is not None:
            vip, member = found
            for host, row in cache.rows_for(member.address, member.port, vip.address, vip.port, vip.protocol):
                target = effective_target(member.state, row.target)
                if target == DRAINING:
                    self._draining.add(key)
                state = current_state(target, live(vip.name, member.name) if target == DRAINING else 0)
                self.by_host.setdefault(host.host_id, {})[row.app_id] = state
                after[(host.host_id, row.app_id)] = state
            self._rows_of[key] = list(after)
        if before != after:
            self.changed = True


class PostulateQueue:
    """The hosts still owed a postulate in this round, oldest first; each tick takes a bounded batch."""

    def __init__(self, batch: int = POSTULATES_PER_TICK) -> None:
        self.batch = batch
        self._pending: dict[str, None] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, host_ids: Iterable[str]) -> None:
        """Owe these hosts a postulate (a host already owed one keeps its place)."""
        for host_id in host_ids:
            self._pending.setdefault(host_id, None)

    def take(self) -> list[str]:
        """The next batch of hosts to postulate."""
        taken = list(islice(self._pending, self.batch))
        for host_id in taken:
            del self._pending[host_id]
        return taken
