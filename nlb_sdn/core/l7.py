"""L7 VIP services (``mode: l7``): which request router takes a new connection, and the log of migrations.

A new connection to an ``l7`` VIP service is plumbed in tunnel mode to a live request router (SPEC §2.3, FIG. 33
step 3302): the router attached to the switch that classified it (FIG. 9A, one router per forwarder), else the VIP's
routers in turn. When the router has chosen a member and the member's host has restored the connection, the router
asks the controller to move the connection (the commit of SPEC §2.6); the controller re-plumbs the connection's
table-1 entry to the member's host and records the migration here, and the router later reports how it ended.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

from pydantic import Field, model_validator

from nlb_sdn.config import Fabric, Host, Member, Vip
from nlb_sdn.config.base import Strict
from nlb_sdn.health.cache import ALIVE

MIGRATION_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
Outcome = Literal["migrated", "proxied", "declined", "failed", "reset"]
"""How a router reports a connection ended up: moved to the member, proxied by the router, not taken by a member
(the router kept it), lost, or reset by the router (``fallback: reset``)."""
OUTCOMES: tuple[str, ...] = get_args(Outcome)
RECENT_MIGRATIONS = 512
MIGRATION_REASONS = frozenset(
    {
        "no_ticket",
        "dump_failed",
        "too_large",
        "unreachable",
        "timeout",
        "connection_lost",
        "bad_reply",
        "refused",
        "commit_failed",
    }
)
"""Why a router's migration fell back (``migration.sender.FAILURE_REASONS``); any other reason a report gives is
counted as ``reason:other``, so the counters stay bounded whatever clients send."""


def vip_routers(vip: Vip, fabric: Fabric) -> list[Host]:
    """The fabric hosts of the VIP service's routers (by name or address), in the VIP's order."""
    return [host for ident in vip.routers if (host := fabric.host(ident)) is not None]


def live_routers(routers: list[Host], statuses: Mapping[str, str]) -> list[Host]:
    """The routers that may take new connections: those whose host's agent is alive, or that have no agent.

    A router node runs an agent with no apps (host id = the router's host name), whose heartbeats (1502) tell the
    controller it lives (SPEC §2.3); a router the H&L cache has never heard of is taken as live (static).
    """
    return [router for router in routers if statuses.get(router.name, ALIVE) == ALIVE]


def router_member(vip: Vip, router: Host) -> Member:
    """A router as the target of a tunnel route: the VIP's port on the router's host, named after the host."""
    return Member(name=router.name, address=router.ip, port=vip.port)


class RouterPicker:
    """Picks the router of each new connection: the one on the ingress switch, else round robin per VIP."""

    def __init__(self) -> None:
        self._turn: Counter[str] = Counter()

    def pick(self, vip: str, routers: list[Host], ingress_switch: str | None) -> Host | None:
        """The router for a new connection to ``vip`` that entered at ``ingress_switch`` (None: no router)."""
        local = [router for router in routers if router.switch == ingress_switch]
        if local:
            return local[0]
        if not routers:
            return None
        turn = self._turn[vip]
        self._turn[vip] = turn + 1
        return routers[turn % len(routers)]


@dataclass(slots=True)
class Migration:
    """One migration of an l7 connection from its router to a member (FIG. 33), as the controller saw it."""

    id: str
    client: str
    vip: str
    router: str
    member: str
    outcome: str
    reason: str = ""
    duration_ms: float | None = None
    at: float = 0.0
    committed_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly view for REST."""
        return asdict(self)


class MigrationLog:
    """The recent migrations (bounded) and counters of commits and outcomes."""

    def __init__(self, size: int = RECENT_MIGRATIONS) -> None:
        self.recent: deque[Migration] = deque(maxlen=size)
        self.counters: Counter[str] = Counter()

    def find(self, migration_id: str) -> Migration | None:
        """The recent migration with this id, if it is still in the log."""
        return next((m for m in reversed(self.recent) if m.id == migration_id), None)

    def committed(self, migration_id: str, client: str, vip: str, router: str, member: str, now: float) -> Migration:
        """Record a commit: the connection now goes to ``member``; the router's report comes later."""
        migration = self.find(migration_id)
        if migration is None:
            migration = Migration(migration_id, client, vip, router, member, "committed", at=now)
            self.recent.append(migration)
        else:
            migration.member, migration.outcome = member, "committed"
        migration.committed_at = now
        self.counters["committed"] += 1
        return migration

    def reported(
        self,
        migration_id: str,
        client: str,
        vip: str,
        router: str,
        member: str,
        outcome: str,
        reason: str,
        duration_ms: float | None,
        now: float,
    ) -> tuple[Migration, bool]:
        """Record a router's report of how a migration ended; also whether it had been committed before."""
        migration = self.find(migration_id)
        was_committed = migration is not None and migration.committed_at is not None
        if migration is None:
            migration = Migration(migration_id, client, vip, router, member, outcome, at=now)
            self.recent.append(migration)
        migration.outcome, migration.reason = outcome, reason
        if duration_ms is not None:
            migration.duration_ms = duration_ms
        migration.member = member or migration.member
        migration.router = router or migration.router
        self.counters[outcome] += 1
        if reason:
            self.counters[f"reason:{reason if reason in MIGRATION_REASONS else 'other'}"] += 1
        return migration, was_committed

    def view(self, limit: int | None = None) -> dict[str, Any]:
        """Recent migrations (newest last) and the counters."""
        recent = list(self.recent)[-limit:] if limit else list(self.recent)
        return {"migrations": [m.as_dict() for m in recent], "count": len(recent), "counters": dict(self.counters)}


class MigrationRequest(Strict):
    """``POST /v1/migrations``: a router's ticket request (before it moves the connection), commit (move the
    connection to the member) or its report of the outcome."""

    phase: Literal["ticket", "commit", "report"]
    id: str = Field(pattern=MIGRATION_ID.pattern)
    vip: str = Field(min_length=1, max_length=64)
    client: str
    member: str = Field(default="", max_length=64)
    router: str = Field(default="", max_length=64)
    outcome: Outcome | None = None
    reason: str = Field(default="", max_length=256)
    duration_ms: float | None = Field(default=None, ge=0, le=3_600_000)

    @model_validator(mode="after")
    def _check(self) -> MigrationRequest:
        ip, _, port = self.client.rpartition(":")
        try:
            ipaddress.IPv4Address(ip)
        except ValueError:
            raise ValueError(f"client: expected IPv4:PORT, got {self.client!r}") from None
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f"client: expected IPv4:PORT, got {self.client!r}")
        if self.phase in ("ticket", "commit") and not self.member:
            raise ValueError(f"member: a {self.phase} names the member the connection moves to")
        if self.phase == "report" and self.outcome is None:
            raise ValueError("outcome: a report names the outcome (" + ", ".join(OUTCOMES) + ")")
        return self

    @property
    def client_address(self) -> tuple[str, int]:
        """The client as (IPv4, port)."""
        ip, _, port = self.client.rpartition(":")
        return str(ipaddress.IPv4Address(ip)), int(port)
