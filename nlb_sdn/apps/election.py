"""Electing the master among the controllers of ``controller.ha``: a tooz lock over Redis and a generation counter.

:class:`Election` is the state machine (one :meth:`Election.step` per heartbeat, no clock, no thread), over a
:class:`Coordinator`: :class:`ToozCoordinator` in production, a fake in the unit tests. The lock says who is master;
the counter, incremented atomically (Redis ``INCR``) on every win, gives each mastership its OpenFlow generation id,
so ids only grow across controllers and a switch refuses the messages of a master that lost (docs/ha.md).
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlencode

import redis

from nlb_sdn.config.ha import HaSettings
from nlb_sdn.core.mastership import Role
from nlb_sdn.dam.sentinel import redis_client

LOG = logging.getLogger("nlb_sdn.ha")
GENERATION_SUFFIX = ":generation"
"""The generation counter's key: the group name and this."""


class CoordinationError(Exception):
    """The coordination backend failed (unreachable, timed out, or refused the call)."""


class Coordinator(Protocol):
    """The election lock and the generation counter, as :class:`Election` uses them."""

    def acquire(self) -> bool:
        """Take the lock if it is free, without waiting; whether this member holds it now."""

    def keep(self) -> bool:
        """Refresh the lock this member holds (its heartbeat); whether it still holds it."""

    def release(self) -> None:
        """Give the lock up (best effort)."""

    def next_generation(self) -> int:
        """A new generation id, larger than every one handed out before (atomic across controllers)."""

    def generation(self) -> int:
        """The latest generation id handed out (0 before any)."""


def default_member_id(lbu_id: int) -> str:
    """This process's name in the election when the config names none: ``lbu<id>@<hostname>:<pid>``."""
    return f"lbu{lbu_id}@{socket.gethostname()}:{os.getpid()}"


class ToozCoordinator:
    """:class:`Coordinator` over tooz's Redis driver (the lock) and a Redis client (the counter).

    tooz is imported here, so a controller without ``controller.ha`` needs no tooz installed.
    """

    def __init__(self, settings: HaSettings, member_id: str) -> None:
        from tooz import coordination  # here: only with controller.ha enabled

        self.tooz_error: type[Exception] = coordination.ToozError
        options = {"lock_timeout": settings.lock_timeout, "timeout": settings.lock_timeout}
        self.driver: Any = coordination.get_coordinator(
            f"{settings.coordination_url}?{urlencode(options)}", member_id.encode()
        )
        self.driver.start()
        self.lock: Any = self.driver.get_lock(settings.group.encode())
        self.counter = redis_client(settings.coordination_url, float(settings.lock_timeout))
        self.counter_key = settings.group + GENERATION_SUFFIX

    def _call(self, what: str, call: Any) -> Any:
        """Run one backend call; its failure becomes a CoordinationError naming ``what``."""
        try:
            return call()
        except (self.tooz_error, redis.RedisError, OSError) as exc:
            raise CoordinationError(f"{what}: {exc}") from exc

    def acquire(self) -> bool:
        """Take the lock if it is free, without waiting."""
        return bool(self._call("acquire", lambda: self.lock.acquire(blocking=False)))

    def keep(self) -> bool:
        """Extend the lock to ``lock_timeout`` from now; False when another member holds it or it expired."""
        return bool(self._call("heartbeat", self.lock.heartbeat))

    def release(self) -> None:
        """Give the lock up; a failure is only logged (the lock expires anyway)."""
        try:
            self.lock.release()
        except Exception as exc:  # noqa: BLE001 -- best effort: the lock expires after lock_timeout
            LOG.info("releasing the election lock failed: %s", exc)

    def next_generation(self) -> int:
        """``INCR`` the counter."""
        return int(self._call("generation", lambda: self.counter.incr(self.counter_key)))

    def generation(self) -> int:
        """``GET`` the counter."""
        return int(self._call("generation", lambda: self.counter.get(self.counter_key)) or 0)


@dataclass(frozen=True)
class RoleChange:
    """What an election step decided: the new role, its generation id and why (for the event log)."""

    role: Role
    generation: int
    reason: str


class Election:
    """The election as one controller sees it: its role and generation id, moved on by :meth:`step`."""

    def __init__(self, coordinator: Coordinator) -> None:
        self.coordinator = coordinator
        self.role = Role.SLAVE
        """No controller is master before it won the lock."""
        self.generation = 0
        """The generation id to send with role requests: our own while master, the latest known while slave."""
        self.failing = False
        """Whether the backend failed at the last step (logged once per outage)."""

    def step(self) -> RoleChange | None:
        """One heartbeat: a master keeps its lock or steps down; a slave tries to win it. The change, if any."""
        try:
            change = self._keep() if self.role is Role.MASTER else self._try_win()
        except CoordinationError as exc:
            if not self.failing:
                LOG.error("the election backend failed: %s", exc)
            self.failing = True
            return self.step_down("the election backend failed") if self.role is Role.MASTER else None
        if self.failing:
            LOG.info("the election backend answers again")
            self.failing = False
        return change

    def _keep(self) -> RoleChange | None:
        """While master: refresh the lock; step down when it was lost."""
        if self.coordinator.keep():
            return None
        return self.step_down("lost the election lock")

    def _try_win(self) -> RoleChange | None:
        """While slave: learn the latest generation id; take the lock if free, with a new generation id."""
        self.generation = max(self.generation, self.coordinator.generation())
        if not self.coordinator.acquire():
            return None
        self.generation = self.coordinator.next_generation()
        self.role = Role.MASTER
        return RoleChange(Role.MASTER, self.generation, "won the election")

    def step_down(self, reason: str) -> RoleChange:
        """Become slave (a lost lock, a failed backend, or a switch that refused our generation as stale)."""
        if self.role is Role.MASTER:
            self.coordinator.release()
        self.role = Role.SLAVE
        return RoleChange(Role.SLAVE, self.generation, reason)
