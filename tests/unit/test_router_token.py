"""The router's bearer token for the controller's REST API (issue 12 item 1): ``--token-file`` or ``NLB_SDN_TOKEN``,
sent on every request (GET and POST, kept-alive connections too), never logged; refusals counted and explained.

The controller is the real REST app (``make_app``) behind a small HTTP/1.1 server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import http.server
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from webob import Request

from nlb_sdn.config import MigrationSettings
from nlb_sdn.migration.sender import AgentChannels, MigrationResult
from nlb_sdn.rest import make_app
from nlb_sdn.router import migrator as module
from nlb_sdn.router.cli import TOKEN_ENV, build_parser, controller_client, load_token, main
from nlb_sdn.router.daemon import Endpoint, Outcome
from nlb_sdn.router.migrator import ControllerClient, ControllerError, RepairMigrator
from tests.lib.net import loopback_connection
from tests.unit.test_l7_migrator import FakeProxy
from tests.unit.test_rest_security import ADMIN_TOKEN, READER_TOKEN, secured_backend

H1 = Endpoint("web", "h1", "10.0.0.11", 80)
SESSION_ROWS = [{"identifier": "abc", "type": "cookie", "vip": "web", "member": "h1", "endpoint": "10.0.0.11:80"}]


class RouterFacingBackend:
    """The token-protected test backend with what routers read and write: allotments, sessions, migrations."""

    def __init__(self) -> None:
        self._backend = secured_backend()
        self.migrations: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    def allotment(self, vip: str) -> dict[str, Any]:
        return {"vip": vip, "values": {"h1": 100}}

    def sessions(self, vip: str | None = None, member: str | None = None) -> list[dict[str, Any]]:
        return SESSION_ROWS

    def migrate(self, request: Any) -> tuple[dict[str, Any], bool]:
        self.migrations.append(request.phase)
        return {"id": request.id, "vip": request.vip}, True


class _WsgiHandler(http.server.BaseHTTPRequestHandler):
    """Serves the WSGI ``app`` over HTTP/1.1 with kept-alive connections; records each request's Authorization."""

    protocol_version = "HTTP/1.1"
    app: ClassVar[Any] = None
    seen: ClassVar[list[tuple[str, tuple[str, int], str | None]]] = []

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        request = Request.blank(self.path, method=self.command)
        for name, value in self.headers.items():
            request.headers[name] = value
        request.body = self.rfile.read(length)
        type(self).seen.append((self.command, self.client_address, self.headers.get("Authorization")))
        response = request.get_response(self.app)
        self.send_response(response.status_int)
        for name, value in response.headerlist:
            if name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        self.wfile.write(response.body)

    do_GET = do_POST = _serve

    def log_message(self, *_args: Any) -> None:
        """Quiet."""


@pytest.fixture
def controller() -> Iterator[tuple[str, RouterFacingBackend]]:
    """The URL of a token-protected REST app on 127.0.0.1, and its backend."""
    backend = RouterFacingBackend()
    _WsgiHandler.app = make_app(backend)
    _WsgiHandler.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _WsgiHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", backend
    finally:
        server.shutdown()
        server.server_close()


def report(client: ControllerClient) -> dict[str, Any]:
    """Post one valid report."""
    body = {"phase": "report", "id": "a" * 32, "vip": "web", "client": "10.0.0.1:40000", "outcome": "proxied"}
    return client.post(body)


# --- sending the token ----------------------------------------------------------------------------------------------


def test_every_request_carries_the_bearer_token_kept_alive_posts_too(
    controller: tuple[str, RouterFacingBackend],
) -> None:
    url, backend = controller
    client = ControllerClient(url, token=ADMIN_TOKEN)
    assert client.allotment("web")["values"] == {"h1": 100}
    assert client.sessions("web") == SESSION_ROWS
    assert [report(client)["migration"]["vip"] for _ in range(3)] == ["web"] * 3
    assert backend.migrations == ["report"] * 3
    assert [(method, auth) for method, _, auth in _WsgiHandler.seen] == [
        ("GET", f"Bearer {ADMIN_TOKEN}"),
        ("GET", f"Bearer {ADMIN_TOKEN}"),
        *[("POST", f"Bearer {ADMIN_TOKEN}")] * 3,
    ]
    assert len({address for method, address, _ in _WsgiHandler.seen if method == "POST"}) == 1, "one kept connection"
    assert client.stats() == {} and ADMIN_TOKEN not in repr(client)


def test_without_a_token_the_controller_refuses_and_the_client_says_why(
    controller: tuple[str, RouterFacingBackend], caplog: pytest.LogCaptureFixture
) -> None:
    url, backend = controller
    client = ControllerClient(url)
    with caplog.at_level(logging.WARNING, logger="nlb_sdn.router.migrator"):
        for call in (lambda: client.allotment("web"), lambda: client.sessions("web"), lambda: report(client)):
            with pytest.raises(ControllerError, match=r"HTTP 401: .*bearer token is required.*--token-file"):
                call()
    assert [auth for _, _, auth in _WsgiHandler.seen] == [None] * 3
    assert client.stats() == {"http_401": 3} and backend.migrations == []
    assert [r.getMessage() for r in caplog.records if "refused" in r.getMessage()] == [
        f"controller {url} refused a request with HTTP 401: the controller wants a bearer token (--token-file or "
        f"NLB_SDN_TOKEN) and has none or another one"
    ], "the first refusal is a warning, the rest are counted"


def test_a_reader_token_reads_but_its_commits_are_403(controller: tuple[str, RouterFacingBackend]) -> None:
    url, backend = controller
    client = ControllerClient(url, token=READER_TOKEN)
    assert client.sessions("web") == SESSION_ROWS
    with pytest.raises(ControllerError, match=r"HTTP 403: .*needs admin.*admin token"):
        report(client)
    assert client.stats() == {"http_403": 1} and backend.migrations == []


# --- the migrator's commit against a token-protected controller ----------------------------------------------------


def committing_migrate(calls: list[str]) -> Callable[..., MigrationResult]:
    """A stand-in for sender.migrate: the host restores the connection, then the commit decides (as in the sender)."""

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
        calls.append(agent[0])
        try:
            commit()
        except Exception as exc:  # noqa: BLE001 - the sender's contract: a failed commit aborts the migration
            return MigrationResult(migration_id, False, "commit_failed", f"commit failed: {exc}")
        return MigrationResult(migration_id, True)

    return migrate


def migrate_once(client: ControllerClient, monkeypatch: pytest.MonkeyPatch) -> tuple[Outcome, RepairMigrator]:
    """Hand one loopback connection to a RepairMigrator committing through ``client``."""
    monkeypatch.setattr(module, "migrate", committing_migrate([]))
    monkeypatch.setattr(module, "FROZEN_LINGER", 0.0)
    monkeypatch.setattr(module, "drop_silently", lambda sock: sock.close())
    migrator = RepairMigrator(client, FakeProxy(), {"web": MigrationSettings()}, 7001, "r1")
    with loopback_connection(client_timeout=None) as (_, _, accepted):

        async def hand_off() -> Outcome:
            outcome = await migrator.migrate(accepted, H1)
            await asyncio.sleep(0.01)
            return outcome

        return asyncio.run(hand_off()), migrator


def test_a_commit_with_an_admin_token_migrates(
    controller: tuple[str, RouterFacingBackend], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, backend = controller
    outcome, migrator = migrate_once(ControllerClient(url, token=ADMIN_TOKEN), monkeypatch)
    assert outcome is Outcome.MIGRATED and backend.migrations == ["commit", "report"]
    assert migrator.stats()["controller_errors"] == {} and migrator.stats()["counters"]["migrated"] == 1


def test_a_commit_without_a_token_is_declined_and_shows_in_stats_and_log(
    controller: tuple[str, RouterFacingBackend], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    url, backend = controller
    with caplog.at_level(logging.INFO, logger="nlb_sdn.router"):
        outcome, migrator = migrate_once(ControllerClient(url), monkeypatch)
    assert outcome is Outcome.PROXIED and backend.migrations == []
    stats = migrator.stats()
    assert stats["reasons"] == {"commit_failed": 1} and stats["counters"]["report_failed"] == 2
    assert stats["controller_errors"] == {"http_401": 3}, "the commit and both reports"
    declined = [r.getMessage() for r in caplog.records if "declined" in r.getMessage()]
    assert len(declined) == 1 and "commit_failed" in declined[0] and "HTTP 401" in declined[0]


def test_the_token_never_reaches_a_log_line(
    controller: tuple[str, RouterFacingBackend], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    url, _ = controller
    with caplog.at_level(logging.DEBUG):
        migrate_once(ControllerClient(url, token=READER_TOKEN), monkeypatch)
        migrate_once(ControllerClient(url, token="not-a-known-token"), monkeypatch)
    text = caplog.text
    assert "HTTP 403" in text and "HTTP 401" in text
    assert READER_TOKEN not in text and "not-a-known-token" not in text


# --- where the token comes from ------------------------------------------------------------------------------------


def test_the_token_file_is_read_and_stripped_and_wins_over_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(f"  {ADMIN_TOKEN}\n")
    assert load_token(str(path), {}) == ADMIN_TOKEN
    assert load_token(str(path), {TOKEN_ENV: READER_TOKEN}) == ADMIN_TOKEN
    assert load_token(None, {TOKEN_ENV: f"{READER_TOKEN}\n"}) == READER_TOKEN
    assert load_token(None, {}) is None


@pytest.mark.parametrize(
    ("content", "environ", "message"),
    [
        (None, {}, "--token-file {path}: cannot read the token"),
        ("  \n", {}, "--token-file {path}: the token is empty"),
        ("two words", {}, "--token-file {path}: the token must be one word"),
        ("ok\x07bell", {}, "--token-file {path}: the token must be one word"),
        ("skip", {TOKEN_ENV: " "}, "NLB_SDN_TOKEN: the token is empty"),
    ],
)
def test_an_unusable_token_is_refused_without_quoting_it(
    tmp_path: Path, content: str | None, environ: dict[str, str], message: str
) -> None:
    path = tmp_path / "token"
    if content is not None and content != "skip":
        path.write_text(content)
    with pytest.raises(ValueError) as caught:
        load_token(None if content == "skip" else str(path), environ)
    assert str(caught.value).startswith(message.format(path=path))
    assert "words" not in str(caught.value) and "bell" not in str(caught.value)


def test_the_cli_client_carries_the_token_and_a_token_file_needs_a_controller(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(ADMIN_TOKEN)
    parser = build_parser()
    args = parser.parse_args(["run", "--config", "x", "--controller", "http://127.0.0.1:1", "--token-file", str(path)])
    client = controller_client(args, {})
    assert client is not None and client._headers == {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    assert controller_client(parser.parse_args(["run", "--config", "x"]), {TOKEN_ENV: ADMIN_TOKEN}) is None
    with pytest.raises(ValueError, match="--token-file needs --controller"):
        controller_client(parser.parse_args(["run", "--config", "x", "--token-file", str(path)]), {})


def test_the_router_refuses_to_start_with_a_missing_token_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "lb.yaml"
    config.write_text(
        "vips:\n- name: web\n  address: 10.0.0.100\n  port: 80\n"
        '  members: [{name: h1, address: 10.0.0.11, port: 80, mac: "00:00:00:00:00:11"}]\n'
        "  pools: [{name: all, members: [h1]}]\n"
    )
    missing = tmp_path / "missing-token"
    argv = ["run", "--config", str(config), "--vip", "web", "--controller", "http://127.0.0.1:1"]
    assert main([*argv, "--token-file", str(missing), "--status", "127.0.0.1:0"]) == 2
    assert f"error: --token-file {missing}: cannot read the token" in capsys.readouterr().err


def test_a_token_on_the_command_line_is_refused_without_echoing_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(["run", "--config", "x", "--token", "s3cret-value"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "--token-file" in err and TOKEN_ENV in err and "s3cret-value" not in err
