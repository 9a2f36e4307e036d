"""The REST API's view of a running controller: every call runs in the app's event loop, never beside it.

REST handlers run in their own green threads. Each call here is posted into the classifier app's event queue as an
:class:`EventCall` and waited for, so the core is entered from that one loop only. Before the app has started its
loop (a test driving it by hand) calls run at once.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from nlb_sdn.apps.dam_pages import dam_page
from nlb_sdn.apps.durable import commit_config
from nlb_sdn.apps.reload import reload_config
from nlb_sdn.config import Config
from nlb_sdn.config.reload import VipsSource
from nlb_sdn.core.l7 import MigrationRequest
from nlb_sdn.framework import EventBase, hub

if TYPE_CHECKING:
    from nlb_sdn.apps.classifier import Classifier

T = TypeVar("T")
CALL_TIMEOUT = 10.0
"""Seconds a REST call waits for the event loop before it fails (the loop is stuck or gone)."""


class EventCall(EventBase):
    """A REST call for the app's event loop: run ``work`` there and hand its result (or exception) back."""

    def __init__(self, work: Callable[[], Any]) -> None:
        super().__init__()
        self.work = work
        self.done = hub.Event()
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        """Run the work (in the event loop) and wake the waiting REST thread."""
        try:
            self.result = self.work()
        except BaseException as exc:  # noqa: BLE001 - handed back to the REST thread, which re-raises it
            self.error = exc
        self.done.set()


class ControllerFacade:
    """What REST may ask of the controller (``rest.app.RestBackend``), each call run in the app's event loop."""

    def __init__(self, app: Classifier) -> None:
        self.app = app

    def _call(self, work: Callable[[], T]) -> T:
        """Run ``work`` in the event loop and return its result (or raise its exception)."""
        if not self.app.looping:
            return work()
        call = EventCall(work)
        self.app.post(call)
        if not call.done.wait(CALL_TIMEOUT):
            raise TimeoutError(f"the controller's event loop did not answer within {CALL_TIMEOUT:.0f} s")
        if call.error is not None:
            raise call.error
        return cast(T, call.result)

    def read(self, work: Callable[[], T]) -> T:
        """Run ``work`` (reading the app's state, e.g. for a metrics scrape) in the event loop; its result."""
        return self._call(work)

    def current_config(self) -> Config:
        """The live model (immutable: safe to read anywhere)."""
        return self.app.lb.config

    def config_version(self) -> int:
        """The stored version of the live model."""
        return self.app.state.version

    def apply_config(self, new: Config, expected_version: int | None = None) -> int:
        """Store a new model (compare-and-set on ``expected_version`` when given), then switch to it through the one
        flow-diff path, on every connected switch; its version."""
        return self._call(lambda: commit_config(self.app, new, expected_version))

    def reload_config(self, vips: VipsSource, expected_version: int | None = None) -> dict[str, Any]:
        """Re-read the config file and apply it through the one flow-diff path (``apps/reload.py``); what changed."""
        return self._call(lambda: reload_config(self.app, self.app.config_path, vips, expected_version))

    def member_state(self, vip: str, member: str) -> dict[str, Any]:
        """Target and current state of a member."""
        return self._call(lambda: self.app.lb.member_state(vip, member))

    def allotment(self, vip: str) -> dict[str, Any]:
        """The VIP's allotment and candidates."""
        return self._call(lambda: self.app.lb.allotment(vip, time.time()))

    def hl_cache(self) -> dict[str, Any]:
        """The consolidated H&L cache."""
        return self._call(lambda: self.app.lb.health.cache.as_dict(time.time()))

    def sessions(self, vip: str | None = None, member: str | None = None) -> list[dict[str, Any]]:
        """Session table rows that have not expired."""

        def rows() -> list[dict[str, Any]]:
            now = time.time()
            return [
                session.as_dict(now)
                for session in self.app.lb.ctx.affinity.sessions.select(vip, member)
                if session.expires_at > now
            ]

        return self._call(rows)

    def delete_session(self, session_id: str) -> bool:
        """Forget one session (here and in the DAM); False when there is none."""

        def delete() -> bool:
            try:
                self.app.carry_out(self.app.lb.delete_session(session_id))
            except LookupError:
                return False
            return True

        return self._call(delete)

    def dam_page(self, kind: str, cursor: str | None, count: int) -> dict[str, Any]:
        """One page of DAM atoms of a kind (read from the store, not the core)."""
        return dam_page(self.app.dam, kind, cursor, count, time.time())

    def migrations(self, limit: int | None = None) -> dict[str, Any]:
        """The recent migrations of l7 connections and their counters."""
        return self._call(lambda: self.app.lb.migrations.view(limit))

    def migration_ticket(self, request: MigrationRequest) -> dict[str, str]:
        """A router's ticket to move a connection to a member's host, with the migration's channel key (hex)."""
        client_ip, client_port = request.client_address
        nonce = secrets.token_hex(16)
        grant = self._call(
            lambda: self.app.lb.migration_ticket(
                request.id, request.vip, client_ip, client_port, request.member, time.time(), nonce
            )
        )
        return grant.as_dict()

    def migrate(self, request: MigrationRequest) -> tuple[dict[str, Any], bool]:
        """A router's commit (move the connection, wait for the switch's barrier) or outcome report.

        Returns the migration and whether the switch confirmed the flow change (True when nothing had to change).
        """
        client_ip, client_port = request.client_address

        def move() -> tuple[Any, Any]:
            lb, now = self.app.lb, time.time()
            if request.phase == "commit" and not lb.role.may_write:
                raise ConnectionError("this controller is a slave (controller.ha): commit to the master")
            if request.phase == "commit":
                effects, migration = lb.commit_migration(
                    request.id, request.vip, client_ip, client_port, request.member, now
                )
            else:
                effects, migration = lb.report_migration(
                    request.id,
                    request.vip,
                    client_ip,
                    client_port,
                    request.router,
                    request.member,
                    request.outcome or "",
                    request.reason,
                    request.duration_ms,
                    now,
                )
            return migration, self.app.carry_out_confirmed(effects)

        migration, barriers = self._call(move)
        return migration.as_dict(), all(self.app.barrier_confirmed(barrier) for barrier in barriers)

    def connections(self, vip: str | None = None, member: str | None = None) -> list[dict[str, Any]]:
        """Tracked connections."""
        return self._call(lambda: self.app.lb.connections(vip, member))

    def stats(self) -> dict[str, Any]:
        """Core counters plus switches, messages sent and errors."""
        return self._call(self.app.stats)
