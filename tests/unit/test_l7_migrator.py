"""The router's RepairMigrator: outcome mapping, the next endpoint of the pool, fallbacks and reports (no root)."""

from __future__ import annotations

import asyncio
import http.server
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import pytest

from nlb_sdn.config import MigrationSettings
from nlb_sdn.config.routing import Pool
from nlb_sdn.migration.sender import AgentChannels, MigrationResult
from nlb_sdn.router import migrator as module
from nlb_sdn.router.daemon import Endpoint, Outcome, Router, Service, ServiceMember
from nlb_sdn.router.migrator import ControllerClient, ControllerError, RepairMigrator
from nlb_sdn.router.rules import Decision
from tests.lib.net import free_port, loopback_connection

H1 = Endpoint("web", "h1", "10.0.0.11", 80)
H2 = Endpoint("web", "h2", "10.0.0.12", 80)
WITH_ALTERNATIVE = Endpoint("web", "h1", "10.0.0.11", 80, (H2,))


class FakeController:
    """Records what the migrator posts; fails when asked to."""

    def __init__(self, fail: bool = False) -> None:
        self.posted: list[dict[str, Any]] = []
        self.fail = fail

    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        self.posted.append(body)
        if self.fail:
            raise ControllerError("controller down")
        return {}


class FakeProxy:
    """A fallback that proxies every connection."""

    def __init__(self) -> None:
        self.calls: list[Endpoint] = []

    async def migrate(self, sock: socket.socket, member: Endpoint) -> Outcome:
        self.calls.append(member)
        return Outcome.PROXIED


@pytest.fixture
def accepted() -> Iterator[socket.socket]:
    """The server side of an established loopback connection (what the router hands to the migrator)."""
    with loopback_connection(client_timeout=None) as (_, _, server):
        yield server


def fake_migrate(results: dict[str, MigrationResult], calls: list[str]) -> Callable[..., MigrationResult]:
    """A stand-in for sender.migrate: runs the commit for migrated results, answers per agent address."""

    def migrate(
        sock: socket.socket,
        agent: tuple[str, int],
        key: bytes,
        timeout: float,
        *,
        src: str,
        migration_id: str,
        commit: Callable[[], None],
        channels: AgentChannels,
    ) -> MigrationResult:
        calls.append(f"{agent[0]}:{agent[1]}")
        result = results[agent[0]]
        if result.migrated:
            commit()
        return MigrationResult(migration_id, result.migrated, result.reason, result.detail)

    return migrate


def run(migrator: RepairMigrator, sock: socket.socket, member: Endpoint) -> Outcome:
    """Run one hand-off to completion."""

    async def main() -> Outcome:
        outcome = await migrator.migrate(sock, member)
        await asyncio.sleep(0.01)
        return outcome

    return asyncio.run(main())


@pytest.fixture
def dropped(monkeypatch: pytest.MonkeyPatch) -> list[socket.socket]:
    """Frozen sockets the migrator lets go of after migrating (no repair mode without root)."""
    found: list[socket.socket] = []
    monkeypatch.setattr(module, "FROZEN_LINGER", 0.0)
    monkeypatch.setattr(module, "drop_silently", lambda sock: (found.append(sock), sock.close()))
    return found


def test_a_migrated_connection_is_committed_then_reported(
    monkeypatch: pytest.MonkeyPatch, accepted: socket.socket, dropped: list[socket.socket]
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(module, "migrate", fake_migrate({"10.0.0.11": MigrationResult("", True)}, calls))
    controller, proxy = FakeController(), FakeProxy()
    migrator = RepairMigrator(controller, proxy, {"web": MigrationSettings()}, 7001, "r1")
    assert run(migrator, accepted, H1) is Outcome.MIGRATED
    assert calls == ["10.0.0.11:7001"] and proxy.calls == [] and len(dropped) == 1
    commit, report = controller.posted
    client_ip, client_port = accepted.getpeername()
    client = f"{client_ip}:{client_port}"
    assert commit == {
        "phase": "commit",
        "id": commit["id"],
        "vip": "web",
        "client": client,
        "member": "h1",
        "router": "r1",
    }
    assert report["phase"] == "report" and report["id"] == commit["id"] and report["outcome"] == "migrated"
    assert report["duration_ms"] >= 0 and migrator.stats()["counters"] == {"attempted": 1, "migrated": 1}


def test_a_declined_member_makes_way_for_the_next_endpoint_of_the_pool(
    monkeypatch: pytest.MonkeyPatch, accepted: socket.socket, dropped: list[socket.socket]
) -> None:
    calls: list[str] = []
    results = {"10.0.0.11": MigrationResult("", False, "refused"), "10.0.0.12": MigrationResult("", True)}
    monkeypatch.setattr(module, "migrate", fake_migrate(results, calls))
    controller = FakeController()
    migrator = RepairMigrator(controller, FakeProxy())
    assert run(migrator, accepted, WITH_ALTERNATIVE) is Outcome.MIGRATED
    assert calls == ["10.0.0.11:7001", "10.0.0.12:7001"]
    assert [(b["phase"], b["member"], b.get("outcome"), b.get("reason")) for b in controller.posted] == [
        ("report", "h1", "declined", "refused"),
        ("commit", "h2", None, None),
        ("report", "h2", "migrated", ""),
    ]
    assert migrator.stats()["reasons"] == {"refused": 1}


def test_when_every_endpoint_declines_the_connection_is_proxied_and_reported(
    monkeypatch: pytest.MonkeyPatch, accepted: socket.socket
) -> None:
    calls: list[str] = []
    results = {"10.0.0.11": MigrationResult("", False, "timeout"), "10.0.0.12": MigrationResult("", False, "refused")}
    monkeypatch.setattr(module, "migrate", fake_migrate(results, calls))
    controller, proxy = FakeController(), FakeProxy()
    migrator = RepairMigrator(controller, proxy)
    assert run(migrator, accepted, WITH_ALTERNATIVE) is Outcome.PROXIED
    assert proxy.calls == [WITH_ALTERNATIVE]
    assert [(b["member"], b["outcome"], b["reason"]) for b in controller.posted] == [
        ("h1", "declined", "timeout"),
        ("h2", "declined", "refused"),
        ("h2", "proxied", "refused"),
    ]
    assert controller.posted[1]["id"] == controller.posted[2]["id"] and controller.posted[2]["duration_ms"] is None


def test_a_local_failure_tries_no_other_endpoint(monkeypatch: pytest.MonkeyPatch, accepted: socket.socket) -> None:
    calls: list[str] = []
    monkeypatch.setattr(
        module, "migrate", fake_migrate({"10.0.0.11": MigrationResult("", False, "dump_failed")}, calls)
    )
    migrator = RepairMigrator(FakeController(), FakeProxy())
    assert run(migrator, accepted, WITH_ALTERNATIVE) is Outcome.PROXIED
    assert calls == ["10.0.0.11:7001"]


def test_the_reset_fallback_resets_the_client(monkeypatch: pytest.MonkeyPatch, accepted: socket.socket) -> None:
    monkeypatch.setattr(module, "migrate", fake_migrate({"10.0.0.11": MigrationResult("", False, "refused")}, []))
    controller, proxy = FakeController(), FakeProxy()
    migrator = RepairMigrator(controller, proxy, {"web": MigrationSettings(fallback="reset")})
    assert run(migrator, accepted, H1) is Outcome.FAILED
    assert accepted.fileno() == -1 and proxy.calls == []
    assert controller.posted[-1]["outcome"] == "reset" and migrator.stats()["counters"]["reset"] == 1


def test_a_report_the_controller_does_not_take_is_counted_not_raised(
    monkeypatch: pytest.MonkeyPatch, accepted: socket.socket
) -> None:
    monkeypatch.setattr(module, "migrate", fake_migrate({"10.0.0.11": MigrationResult("", False, "refused")}, []))
    migrator = RepairMigrator(FakeController(fail=True), FakeProxy())
    assert run(migrator, accepted, H1) is Outcome.PROXIED
    assert migrator.stats()["counters"]["report_failed"] == 2


def test_the_controller_client_names_an_unreachable_controller() -> None:
    port = free_port()
    with pytest.raises(ControllerError, match=f"127.0.0.1:{port}/v1/migrations"):
        ControllerClient(f"http://127.0.0.1:{port}", timeout=1.0).post({"phase": "report"})


def test_the_router_offers_the_other_pool_members_as_alternatives_and_shows_migrator_counters() -> None:
    members = tuple(ServiceMember(name, f"10.0.0.{octet}", 80) for name, octet in (("h1", 11), ("h2", 12), ("h3", 13)))
    service = Service("web", "10.0.0.100", 80, members, (Pool(name="api", members=["h1", "h2"]),))
    assert Router._alternatives(service, Decision("api", 0, "rule"), "h1") == (H2,)
    assert Router._alternatives(service, Decision("api", 0, "cookie", "h1"), "h1") == ()
    router = Router([service])
    assert "migration" not in router.stats()
    router.migrator = RepairMigrator(FakeController(), router.proxy)
    assert router.stats()["migration"] == {
        "counters": {},
        "reasons": {},
        "agent_connections": {"connected": 0, "reused": 0},
    }


class _MigrationsEndpoint(http.server.BaseHTTPRequestHandler):
    """``POST /v1/migrations`` answering ``{}``, HTTP/1.1 kept alive; it closes a connection idle for 0.2 s."""

    protocol_version = "HTTP/1.1"
    timeout = 0.2
    connections: ClassVar[list[tuple[str, int]]] = []  # shared: each request gets a new handler instance
    closed: ClassVar[threading.Event] = threading.Event()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.connections.append(self.client_address)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def finish(self) -> None:
        super().finish()
        type(self).closed.set()

    def log_message(self, *_args: Any) -> None:
        """Quiet."""


def test_the_controller_client_keeps_its_connection_and_replaces_one_the_controller_closed() -> None:
    _MigrationsEndpoint.connections = []
    _MigrationsEndpoint.closed = threading.Event()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _MigrationsEndpoint)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        client = ControllerClient(f"http://127.0.0.1:{server.server_address[1]}", timeout=2.0)
        assert [client.post({"phase": "report"}) for _ in range(3)] == [{}, {}, {}]
        assert len(set(_MigrationsEndpoint.connections)) == 1, "one connection for three posts"
        assert _MigrationsEndpoint.closed.wait(5), "the server closes the idle connection"
        assert client.post({"phase": "report"}) == {}
        assert len(set(_MigrationsEndpoint.connections)) == 2, "the closed connection was replaced"
    finally:
        server.shutdown()
        server.server_close()
