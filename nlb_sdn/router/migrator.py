"""The router's ``TCP_REPAIR`` migrator for ``l7`` VIP services (FIG. 33, 3306-3314), with the controller's commit.

For each connection the router hands over, :class:`RepairMigrator` runs :func:`nlb_sdn.migration.sender.migrate`
in a worker thread toward the member host's agent (its migration port). First it asks the controller for a ticket
(``POST /v1/migrations``, phase ``ticket``): the controller's word, signed with the member host's key, that this
connection may move there, and the migration's channel key; the router holds no key of its own. Once the host has
restored the connection,
the commit asks the controller (``POST /v1/migrations``, phase ``commit``) to re-plumb the connection's forwarder
entry to the member's host; the controller answers after the switch confirmed it, and only then does the router let
go of its socket. A migration the host or the controller declines leaves the socket live here: the migrator tries the
next endpoint of the pool, then falls back as the VIP's ``migration.fallback`` says (proxy, or reset the client).
Every outcome is reported to the controller (phase ``report``).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import logging
import socket
import struct
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from nlb_sdn.config import MigrationSettings
from nlb_sdn.migration.sender import AgentChannels, MigrationResult, migrate
from nlb_sdn.migration.tcprepair import drop_silently
from nlb_sdn.migration.tickets import Grant
from nlb_sdn.migration.wire import MIGRATION_PORT
from nlb_sdn.router.daemon import Endpoint, Migrator, Outcome

log = logging.getLogger("nlb_sdn.router.migrator")

FROZEN_LINGER = 1.0
"""Seconds the router keeps a migrated connection's socket frozen (repair mode, drop filter) after letting go.

The switch confirms the commit (barrier) once its flow table changed, but a userspace datapath may forward from its
flow cache for a moment longer; a client segment that still reaches the router then meets the frozen socket and is
dropped in silence, where the bare listening socket would have answered it with a RST."""
CONTROLLER_TIMEOUT = 2.0
"""Seconds a commit or report may take at the controller (its barrier wait included)."""
HOST_BOUND_REASONS = frozenset(
    {"no_ticket", "unreachable", "timeout", "connection_lost", "bad_reply", "refused", "commit_failed"}
)
"""Reasons that belong to the chosen host (or its commit), so another endpoint may still take the connection."""
_LINGER_RESET = struct.Struct("ii").pack(1, 0)


class ControllerError(RuntimeError):
    """The controller did not accept a commit or report (unreachable, or an HTTP error status)."""


class Controller(Protocol):
    """Where a migrator sends its commits and reports."""

    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` to ``/v1/migrations``; the decoded answer, or ControllerError."""


@runtime_checkable
class ControllerWithStats(Controller, Protocol):
    """A controller client that also counts the requests the controller refused or never answered."""

    def stats(self) -> dict[str, int]:
        """The client's error counters."""


AUTH_HINTS = {
    401: "the controller wants a bearer token (--token-file or NLB_SDN_TOKEN) and has none or another one",
    403: "the router's token may only read; commits and reports need an admin token",
}
"""What a refusal of the controller's REST API means for a router's operator."""


class ControllerClient:
    """The controller's REST for routers: migration commits and reports, sessions, allotments (blocking calls).

    With a ``token`` every request (GET and POST, kept-alive connections too) carries ``Authorization: Bearer``;
    the token is never logged nor part of an error message.
    """

    def __init__(self, url: str, timeout: float = CONTROLLER_TIMEOUT, token: str | None = None) -> None:
        """A client of the controller at ``url`` (``http://host:port``) with a per-request ``timeout``."""
        self.base = url.rstrip("/")
        self.url = self.base + "/v1/migrations"
        self.timeout = timeout
        self._headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self._address = urllib.parse.urlsplit(self.base)
        self._kept = threading.local()
        self._errors: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        """The controller's URL and whether a token is sent (never the token)."""
        return f"ControllerClient({self.base!r}, token={'yes' if self._headers else 'no'})"

    def stats(self) -> dict[str, int]:
        """Requests the controller refused (``http_<status>``) or that never got an answer (``unreachable``)."""
        with self._lock:
            return dict(sorted(self._errors.items()))

    def allotment(self, vip: str) -> dict[str, Any]:
        """The VIP service's allotment in use (``GET /v1/vips/{vip}/allotment``), or ControllerError."""
        url = f"{self.base}/v1/vips/{urllib.parse.quote(vip, safe='')}/allotment"
        try:
            return dict(self._get(url))
        except (TypeError, ValueError) as exc:
            raise ControllerError(f"{url}: {exc}") from None

    def sessions(self, vip: str) -> list[dict[str, Any]]:
        """The controller's session table rows of one VIP service (``GET /v1/sessions?vip=``), or ControllerError."""
        url = f"{self.base}/v1/sessions?{urllib.parse.urlencode({'vip': vip})}"
        try:
            return list(self._get(url)["sessions"])
        except (KeyError, TypeError) as exc:
            raise ControllerError(f"{url}: {exc}") from None

    def _get(self, url: str) -> Any:
        """The decoded JSON answer to ``GET url``, or ControllerError."""
        request = urllib.request.Request(url, headers=self._headers)
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            with contextlib.closing(exc):
                raise self._refused(url, exc.code, exc.read()) from None
        except OSError as exc:
            self._count("unreachable")
            raise ControllerError(f"{url}: {exc}") from None
        except ValueError as exc:
            raise ControllerError(f"{url}: {exc}") from None

    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body``; the decoded answer, or ControllerError.

        Commits and reports go over one kept-alive connection per worker thread (a handshake less on the migration
        path). A kept connection the controller closed while it was idle is replaced once, at once.
        """
        payload = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", **self._headers}
        while True:
            connection, kept = self._connection()
            try:
                connection.request("POST", self._address.path + "/v1/migrations", payload, headers)
                response = connection.getresponse()
                data = response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                self._drop()
                if kept:
                    continue
                self._count("unreachable")
                raise ControllerError(f"{self.url}: {exc}") from None
            except (OSError, http.client.HTTPException) as exc:
                self._drop()
                self._count("unreachable")
                raise ControllerError(f"{self.url}: {exc}") from None
            if response.status >= 400:
                raise self._refused(self.url, response.status, data)
            try:
                return dict(json.loads(data or b"{}"))
            except ValueError as exc:
                raise ControllerError(f"{self.url}: {exc}") from None

    def _refused(self, url: str, status: int, data: bytes) -> ControllerError:
        """The error for an HTTP error ``status``: counted, and for 401 and 403 what the operator should fix (logged
        as a warning the first time)."""
        first = self._count(f"http_{status}") == 1
        hint = AUTH_HINTS.get(status)
        text = f"{url}: HTTP {status}: {data[:300].decode(errors='replace').strip()}"
        if hint is not None:
            if first:
                log.warning("controller %s refused a request with HTTP %d: %s", self.base, status, hint)
            text += f" ({hint})"
        return ControllerError(text)

    def _count(self, error: str) -> int:
        """Count one error of the controller's; how many of that kind so far."""
        with self._lock:
            self._errors[error] += 1
            return self._errors[error]

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        """This thread's connection to the controller, and whether it was kept from an earlier request."""
        connection = getattr(self._kept, "connection", None)
        if connection is not None:
            return connection, True
        connection = http.client.HTTPConnection(
            self._address.hostname or "", self._address.port or 80, timeout=self.timeout
        )
        self._kept.connection = connection
        return connection, False

    def _drop(self) -> None:
        """Close and forget this thread's connection."""
        connection = getattr(self._kept, "connection", None)
        if connection is not None:
            connection.close()
            self._kept.connection = None


class RepairMigrator:
    """Moves connections to members with ``TCP_REPAIR``; the controller repoints the forwarder at commit."""

    def __init__(
        self,
        controller: Controller,
        proxy: Migrator,
        settings: Mapping[str, MigrationSettings] | None = None,
        migration_port: int = MIGRATION_PORT,
        router: str = "",
    ) -> None:
        """A migrator getting tickets from and committing at ``controller``; ``settings`` per VIP service name
        (timeout, fallback)."""
        self.controller = controller
        self.proxy = proxy
        self.settings = dict(settings or {})
        self.migration_port = migration_port
        self.router = router
        self.counters: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        self.channels = AgentChannels()

    def stats(self) -> dict[str, Any]:
        """Counters of migration attempts, outcomes and decline reasons, and of connections to agents."""
        return {
            "counters": dict(self.counters),
            "reasons": dict(sorted(self.reasons.items())),
            "agent_connections": dict(self.channels.counters),
            **(
                {"controller_errors": self.controller.stats()}
                if isinstance(self.controller, ControllerWithStats)
                else {}
            ),
        }

    async def migrate(self, sock: socket.socket, member: Endpoint) -> Outcome:
        """Migrate ``sock`` to ``member`` (or the next endpoint of its pool), else proxy or reset; report it all."""
        settings = self.settings.get(member.vip, MigrationSettings())
        try:
            host, port = sock.getpeername()[:2]
            client = f"{host}:{port}"
        except OSError:
            sock.close()
            self.counters["client_gone"] += 1
            return Outcome.FAILED
        for endpoint in (member, *member.alternatives):
            migration_id = uuid.uuid4().hex
            started = time.monotonic()
            self.counters["attempted"] += 1
            frozen = sock.dup()
            result = await asyncio.to_thread(
                self._migrate, sock, endpoint, client, migration_id, settings.timeout_ms / 1000
            )
            duration_ms = (time.monotonic() - started) * 1000
            if result.migrated:
                asyncio.get_running_loop().call_later(FROZEN_LINGER, drop_silently, frozen)
                self.counters["migrated"] += 1
                await self._report(migration_id, endpoint, client, "migrated", "", duration_ms)
                return Outcome.MIGRATED
            frozen.close()
            self.counters["declined"] += 1
            self.reasons[result.reason] += 1
            log.info(
                "%s: migration %s of %s to %s declined: %s %s",
                endpoint.vip,
                migration_id,
                client,
                endpoint.member,
                result.reason,
                result.detail,
            )
            await self._report(migration_id, endpoint, client, "declined", result.reason, duration_ms)
            if result.reason not in HOST_BOUND_REASONS:
                break
        return await self._fall_back(sock, member, settings, migration_id, endpoint, client, result.reason)

    async def _fall_back(
        self,
        sock: socket.socket,
        member: Endpoint,
        settings: MigrationSettings,
        migration_id: str,
        endpoint: Endpoint,
        client: str,
        reason: str,
    ) -> Outcome:
        """No endpoint took the connection: proxy it or reset the client, as the VIP says; report it under the last
        attempt's id."""
        if settings.fallback == "reset":
            reset(sock)
            outcome, reported = Outcome.FAILED, "reset"
        else:
            outcome = await self.proxy.migrate(sock, member)
            reported = outcome.value
        self.counters[reported] += 1
        await self._report(migration_id, endpoint, client, reported, reason, None)
        return outcome

    def _migrate(
        self, sock: socket.socket, endpoint: Endpoint, client: str, migration_id: str, timeout: float
    ) -> MigrationResult:
        """One blocking migration to ``endpoint``'s agent, committed at the controller (a worker thread)."""

        request = {"id": migration_id, "vip": endpoint.vip, "client": client, "member": endpoint.member}
        request["router"] = self.router

        def ticket(migration_id: str) -> Grant:
            answer = self.controller.post({"phase": "ticket", **request, "id": migration_id})
            try:
                return Grant.from_dict(answer["ticket"])
            except (KeyError, TypeError, ValueError) as exc:
                raise ControllerError(f"the controller's answer holds no ticket: {exc!r}") from None

        def commit() -> None:
            self.controller.post({"phase": "commit", **request})

        return migrate(
            sock,
            (endpoint.address, self.migration_port),
            ticket,
            timeout,
            src=self.router or "router",
            migration_id=migration_id,
            commit=commit,
            channels=self.channels,
        )

    async def _report(
        self, migration_id: str, endpoint: Endpoint, client: str, outcome: str, reason: str, duration_ms: float | None
    ) -> None:
        """Tell the controller how a migration ended (a failure to do so is logged and counted, not raised)."""
        body = {
            "phase": "report",
            "id": migration_id,
            "vip": endpoint.vip,
            "client": client,
            "member": endpoint.member,
            "router": self.router,
            "outcome": outcome,
            "reason": reason,
            "duration_ms": None if duration_ms is None else round(duration_ms, 3),
        }
        try:
            await asyncio.to_thread(self.controller.post, body)
        except ControllerError as exc:
            self.counters["report_failed"] += 1
            log.warning("report of migration %s: %s", migration_id, exc)


def reset(sock: socket.socket) -> None:
    """Close ``sock`` with a RST (``SO_LINGER`` 0): the ``reset`` fallback."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    sock.close()
