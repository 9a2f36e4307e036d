"""The request router daemon on loopback ports: routing by path, SNI and cookie pins through the proxy hand-off,
rejections of bad input, the migrator seam, counters and the status port.

The router and the test backends run on an event loop in a background thread; clients use blocking sockets with
timeouts, and every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from nlb_sdn.affinity.sessions import APP, Session, SessionTable
from nlb_sdn.config import ConfigError, Vip
from nlb_sdn.config.routing import Pool
from nlb_sdn.dam.atoms import session_key
from nlb_sdn.router.cli import load_services, main as cli_main
from nlb_sdn.router.daemon import (
    Endpoint,
    Outcome,
    Router,
    RouterSettings,
    Service,
    ServiceMember,
    http_reply,
    listen_socket,
)
from tests.lib.net import exchange, free_port
from tests.lib.polling import poll_until
from tests.lib.router import client_hello, http_head, route_rules as rules

T = TypeVar("T")
TIMEOUT = 5.0
HEAD_TIMEOUT = 0.5


class LoopThread:
    """An asyncio event loop running in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(TIMEOUT)

    def call(self, function: Callable[[], T]) -> T:
        """Call ``function`` on the loop's thread and return its result."""

        async def call() -> T:
            return function()

        return self.run(call())

    def close(self) -> None:
        """Stop the loop and its thread."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(TIMEOUT)
        self.loop.close()


class Backends:
    """Named test servers: HTTP ones (``<name> <request line>``, or N bytes for ``/bulk/N``) and raw ones."""

    def __init__(self, loop: LoopThread) -> None:
        self.loop = loop
        self.servers: list[asyncio.Server] = []
        self.received: dict[str, list[bytes]] = {}

    def http(self, name: str) -> int:
        """Start an HTTP backend; its port."""

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
                self.received[name].append(head)
                request_line = head.split(b"\r\n")[0].decode()
                path = request_line.split(" ")[1]
                body = (
                    bytes(i % 251 for i in range(int(path[6:])))
                    if path.startswith("/bulk/")
                    else f"{name} {request_line}\n".encode()
                )
                writer.write(
                    b"HTTP/1.1 200 OK\r\nX-Served-By: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                    % (name.encode(), len(body))
                    + body
                )
                await writer.drain()
            except (OSError, TimeoutError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        return self._start(name, handle)

    def raw(self, name: str, size: int) -> int:
        """Start a backend that reads exactly ``size`` bytes and answers ``<name> <size>``; its port."""

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                data = await asyncio.wait_for(reader.readexactly(size), TIMEOUT)
                self.received[name].append(data)
                writer.write(f"{name} {len(data)}".encode())
                await writer.drain()
            except (OSError, TimeoutError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        return self._start(name, handle)

    def _start(self, name: str, handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any]) -> int:
        """Start a server for ``handle`` on a free loopback port."""
        self.received[name] = []
        server = self.loop.run(asyncio.start_server(handle, "127.0.0.1", 0))
        self.servers.append(server)
        return server.sockets[0].getsockname()[1]

    def close(self) -> None:
        """Stop every backend."""
        for server in self.servers:
            server.close()


class Lab:
    """Backends a1, a2 (pool A), b1 (pool B) behind the ``web`` service, t1 behind the ``tls`` service."""

    def __init__(self, loop: LoopThread) -> None:
        self.loop = loop
        self.backends = Backends(loop)
        web_members = (
            ServiceMember("a1", "127.0.0.1", self.backends.http("a1"), weight=1),
            ServiceMember("a2", "127.0.0.1", self.backends.http("a2"), weight=1),
            ServiceMember("b1", "127.0.0.1", self.backends.http("b1"), weight=2),
        )
        self.web = Service(
            "web",
            "127.0.0.1",
            free_port(),
            web_members,
            pools=(Pool(name="A", members=["a1", "a2"]), Pool(name="B", members=["b1"])),
            rules=rules(
                {"match": {"cookie": {"name": "NLBSESS"}}, "pin": "cookie"},
                {"match": {"path_prefix": "/api/"}, "pool": "A"},
                {"match": {"path_prefix": "/static/"}, "pool": "B"},
            ),
        )
        self.hello = client_hello("secure.example", session_id=b"\x07" * 32)
        tls_member = ServiceMember("t1", "127.0.0.1", self.backends.raw("t1", len(self.hello)))
        self.tls = Service(
            "tls",
            "127.0.0.2",
            free_port("127.0.0.2"),
            (tls_member,),
            pools=(Pool(name="T", members=["t1"]),),
            rules=rules({"match": {"sni": "*.example"}, "pool": "T"}),
        )
        self.sessions = SessionTable()
        self.routers: list[Router] = []

    def router(self, **kwargs: Any) -> Router:
        """A started router for both services (settings: short head timeout, any free status port)."""
        settings = kwargs.pop("settings", RouterSettings(head_timeout=HEAD_TIMEOUT, status_port=0))
        router = Router([self.web, self.tls], settings, sessions=self.sessions, **kwargs)
        self.loop.run(router.start())
        self.routers.append(router)
        return router

    def stats(self, router: Router, accepted: int = 0) -> dict[str, Any]:
        """The router's counters once it has accepted ``accepted`` connections and is deciding none (or after
        TIMEOUT)."""

        def settled() -> dict[str, Any] | None:
            """The counters if the router has settled, else None."""
            stats = self.loop.call(router.stats)
            return stats if stats["active"] == 0 and stats["accepted"] >= accepted else None

        return poll_until(settled, TIMEOUT, 0.02) or self.loop.call(router.stats)

    def close(self) -> None:
        """Stop the routers and the backends."""
        for router in self.routers:
            self.loop.run(router.stop())
        self.backends.close()


@pytest.fixture
def lab() -> Iterator[Lab]:
    """The lab on a fresh event loop thread."""
    loop = LoopThread()
    lab = Lab(loop)
    try:
        yield lab
    finally:
        lab.close()
        loop.close()


def get(port: int, path: str, *headers: str) -> tuple[int, str, bytes]:
    """GET ``path`` through the router: (status, X-Served-By, body)."""
    reply = exchange(port, http_head(path, "www.example.com", *headers))
    status_line, _, rest = reply.partition(b"\r\n")
    fields, _, body = rest.partition(b"\r\n\r\n")
    served_by = next(
        (
            line.split(b":", 1)[1].strip().decode()
            for line in fields.split(b"\r\n")
            if line.lower().startswith(b"x-served-by:")
        ),
        "",
    )
    return int(status_line.split()[1]), served_by, body


def closed_without_reply(sock: socket.socket) -> bool:
    """Whether the peer closed ``sock`` (FIN or RST) without sending a byte."""
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True


def outcomes(stats: dict[str, Any]) -> int:
    """The sum of the outcome counters (each accepted connection ends in exactly one)."""
    return sum(stats[key] for key in ("migrated", "proxied", "failed", "bad_request", "closed"))


def test_routes_by_path_default_and_counts(lab: Lab) -> None:
    router = lab.router()
    port = lab.web.port
    assert {get(port, f"/api/items/{i}")[1] for i in range(6)} == {"a1", "a2"}
    assert {get(port, f"/static/{i}.css")[1] for i in range(4)} == {"b1"}
    status, served_by, body = get(port, "/static/../api/x")
    assert (status, body) == (200, f"{served_by} GET /static/../api/x HTTP/1.1\n".encode()) and served_by in (
        "a1",
        "a2",
    )
    default = [get(port, f"/other/{i}")[1] for i in range(8)]
    assert {name: default.count(name) for name in set(default)} == {"a1": 2, "a2": 2, "b1": 4}
    stats = lab.stats(router)
    assert stats["accepted"] == stats["proxied"] == 19 == outcomes(stats)
    assert stats["decided"] == {"rule": 11, "cookie": 0, "tls_session_id": 0, "default": 8}
    assert stats["services"]["web"]["rules"] == [0, 7, 4]
    assert stats["services"]["web"]["members"] == {"a1": 6, "a2": 5, "b1": 8}


def test_bulk_and_parallel_connections_through_the_proxy(lab: Lab) -> None:
    router = lab.router()
    size = 3_000_000
    status, _, body = get(lab.web.port, f"/bulk/{size}")
    assert status == 200 and body == bytes(i % 251 for i in range(size))
    results: list[int] = []
    threads = [
        threading.Thread(target=lambda i=i: results.append(get(lab.web.port, f"/api/{i}")[0])) for i in range(40)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert results == [200] * 40
    stats = lab.stats(router)
    assert stats["proxied"] == 41 == outcomes(stats)


def test_head_split_over_several_segments(lab: Lab) -> None:
    lab.router()
    head = b"GET /static/slow HTTP/1.1\r\nHost: www.example.com\r\nX-Long: " + b"v" * 3000 + b"\r\n\r\n"
    reply = exchange(lab.web.port, head, chunks=5, pause=0.05)
    assert reply.startswith(b"HTTP/1.1 200 OK") and b"X-Served-By: b1" in reply
    assert lab.backends.received["b1"] == [head]


def test_cookie_pins_a_client(lab: Lab) -> None:
    router = lab.router()
    lab.sessions.upsert(Session("s-77", APP, "web", "b1", "127.0.0.1", 0, "127.0.0.1", "hb1", time.time() + 60, "test"))
    lab.sessions.upsert(Session("s-old", APP, "web", "b1", "127.0.0.1", 0, "127.0.0.1", "hb1", time.time() - 1, "test"))
    assert {get(lab.web.port, f"/api/{i}", "Cookie: theme=dark; NLBSESS=s-77")[1] for i in range(5)} == {"b1"}
    assert get(lab.web.port, "/api/x", "Cookie: NLBSESS=s-old")[1] in ("a1", "a2")
    assert get(lab.web.port, "/api/x", "Cookie: NLBSESS=unknown")[1] in ("a1", "a2")
    stats = lab.stats(router)
    assert stats["decided"]["cookie"] == 5 and stats["decided"]["rule"] == 2
    assert stats["services"]["web"]["rules"][0] == 5
    assert session_key(APP, "s-old") not in lab.sessions.sessions


def test_tls_routed_by_sni_and_bytes_pass_intact(lab: Lab) -> None:
    router = lab.router()
    reply = exchange(lab.tls.port, lab.hello, address="127.0.0.2")
    assert reply == f"t1 {len(lab.hello)}".encode()
    assert lab.backends.received["t1"] == [lab.hello]
    assert lab.stats(router)["services"]["tls"]["rules"] == [1]


def test_bad_input_is_rejected_and_the_router_keeps_serving(lab: Lab) -> None:
    router = lab.router()
    port = lab.web.port
    bad_heads = [
        b"GET /\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\nX-Evil: 1\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"x" * 12000 + b"\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"y" * 3000) for i in range(4)),
        b"GET / HTTP/1.1\r\nHost: a\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(100)) + b"\r\n",
    ]
    for head in bad_heads:
        reply = exchange(port, head)
        assert reply.startswith(b"HTTP/1.1 400 Bad Request\r\n"), (head[:40], reply)
        assert get(port, "/api/after")[0] == 200
    assert exchange(port, b"\x00\x01\x02\x03 not http at all\r\n\r\n") == b""
    assert exchange(port, b"\x16\x03\x01\x00\x04\x02\x00\x00\x00") == b""
    assert exchange(lab.tls.port, b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00", address="127.0.0.2") == b""
    assert get(port, "/static/after")[0] == 200
    stats = lab.stats(router)
    assert stats["bad_request"] == 6 and stats["closed"] == 3 and stats["proxied"] == 7
    assert stats["reasons"] == {
        "bad_request_line": 1,
        "header_injection": 1,
        "missing_host": 1,
        "header_too_large": 1,
        "head_too_large": 1,
        "too_many_headers": 1,
        "not_http": 1,
        "not_client_hello": 1,
        "bad_hello": 1,
    }
    assert stats["accepted"] == outcomes(stats) == 16


def test_slow_or_vanishing_clients_are_closed(lab: Lab) -> None:
    router = lab.router()
    with socket.create_connection(("127.0.0.1", lab.web.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n")
        started = time.monotonic()
        assert closed_without_reply(sock)
        assert HEAD_TIMEOUT * 0.8 < time.monotonic() - started < HEAD_TIMEOUT + 2
    with socket.create_connection(("127.0.0.1", lab.web.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n")
        sock.shutdown(socket.SHUT_WR)
        assert closed_without_reply(sock)
    socket.create_connection(("127.0.0.1", lab.web.port), timeout=TIMEOUT).close()
    stats = lab.stats(router, accepted=3)
    assert stats["reasons"] == {"timeout": 1, "client_closed": 2} and stats["closed"] == 3


def test_head_in_too_many_segments_is_cut_short(lab: Lab) -> None:
    router = lab.router(settings=RouterSettings(max_peeks=3, status_port=0))
    head = b"GET /api/x HTTP/1.1\r\nHost: www.example.com\r\nX-Pad: 123456\r\n\r\n"
    assert exchange(lab.web.port, head, chunks=6, pause=0.05) == b""
    assert lab.stats(router, accepted=1)["reasons"] == {"too_fragmented": 1}


def test_connections_over_the_cap_are_closed(lab: Lab) -> None:
    router = lab.router(settings=RouterSettings(max_connections=1, head_timeout=1.0, status_port=0))
    with socket.create_connection(("127.0.0.1", lab.web.port), timeout=TIMEOUT) as held:
        held.sendall(b"GET / HTTP/1.1\r\n")
        poll_until(lambda: lab.loop.call(router.stats)["active"] == 1, TIMEOUT)
        with socket.create_connection(("127.0.0.1", lab.web.port), timeout=TIMEOUT) as refused:
            assert closed_without_reply(refused)
        assert closed_without_reply(held)
    assert lab.stats(router, accepted=2)["reasons"] == {"over_capacity": 1, "timeout": 1}


def test_fuzzed_connections_never_stop_the_router(lab: Lab) -> None:
    router = lab.router(settings=RouterSettings(head_timeout=0.2, status_port=0))
    rng = random.Random(9)
    good = b"GET /api/ok HTTP/1.1\r\nHost: www.example.com\r\nCookie: NLBSESS=x\r\n\r\n"
    for case in range(40):
        if case % 2:
            data = os.urandom(rng.randrange(1, 2000))
        else:
            data = bytearray(good)
            for _ in range(rng.randint(1, 6)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            data = bytes(data)
        with contextlib.suppress(OSError):  # the router may reset a garbled request; it must stay up
            exchange(lab.web.port, data)
    assert get(lab.web.port, "/api/still-up")[0] == 200
    stats = lab.stats(router)
    assert stats["accepted"] == outcomes(stats) == 41 and stats["failed"] == 0


class FakeMigrator:
    """A migrator that records what it was given and returns a fixed outcome (closing the socket if MIGRATED)."""

    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome
        self.calls: list[tuple[Endpoint, bytes]] = []

    async def migrate(self, sock: socket.socket, member: Endpoint) -> Outcome:
        """Peek at what is still queued, then return the outcome."""
        self.calls.append((member, sock.recv(65536, socket.MSG_PEEK)))
        if self.outcome is Outcome.MIGRATED:
            sock.close()
        return self.outcome


def test_migrator_gets_the_queued_request(lab: Lab) -> None:
    migrator = FakeMigrator(Outcome.MIGRATED)
    router = lab.router(migrator=migrator)
    head = b"GET /static/m HTTP/1.1\r\nHost: www.example.com\r\n\r\n"
    assert exchange(lab.web.port, head) == b""
    assert migrator.calls == [(Endpoint("web", "b1", "127.0.0.1", lab.web.member("b1").port), head)]
    stats = lab.stats(router)
    assert stats["migrated"] == 1 and stats["proxied"] == 0 and lab.backends.received["b1"] == []


def test_declined_migration_falls_back_to_the_proxy(lab: Lab) -> None:
    migrator = FakeMigrator(Outcome.DECLINED)
    router = lab.router(migrator=migrator)
    assert get(lab.web.port, "/api/x")[0] == 200
    stats = lab.stats(router)
    assert stats["proxied"] == 1 and stats["reasons"] == {"migration_declined": 1} and len(migrator.calls) == 1


def test_declined_migration_without_fallback_fails(lab: Lab) -> None:
    router = lab.router(
        migrator=FakeMigrator(Outcome.DECLINED), settings=RouterSettings(fallback="close", status_port=0)
    )
    assert exchange(lab.web.port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n") == b""
    stats = lab.stats(router)
    assert stats["failed"] == 1 and stats["reasons"] == {"migration_declined": 1}


def test_member_down_and_no_member(lab: Lab) -> None:
    members = (ServiceMember("gone", "127.0.0.1", free_port()), ServiceMember("idle", "127.0.0.1", 1, weight=0))
    lab.web = Service(
        "web",
        "127.0.0.1",
        lab.web.port,
        members,
        pools=(Pool(name="P", members=["gone"]), Pool(name="I", members=["idle"])),
        rules=rules({"match": {"path_prefix": "/p"}, "pool": "P"}, {"match": {"path_prefix": "/idle"}, "pool": "I"}),
    )
    router = lab.router()
    assert exchange(lab.web.port, b"GET /p HTTP/1.1\r\nHost: a\r\n\r\n") == b""
    status, _, body = get(lab.web.port, "/idle")
    assert (status, body) == (503, b"no member\n")
    stats = lab.stats(router)
    assert stats["failed"] == 2 and stats["reasons"] == {"handoff_failed": 1, "no_member": 1}


def test_status_port(lab: Lab) -> None:
    router = lab.router()
    get(lab.web.port, "/api/x")
    status = router.status_address
    assert status is not None
    with urllib.request.urlopen(f"http://{status[0]}:{status[1]}/stats", timeout=TIMEOUT) as response:
        served = json.load(response)
    assert served["proxied"] == 1 and set(served) == set(lab.stats(router))
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"http://{status[0]}:{status[1]}/nope", timeout=TIMEOUT)
    assert info.value.code == 404


def test_listen_socket_binds_before_the_address_exists() -> None:
    sock = listen_socket("192.0.2.77", 8080, 16)
    try:
        assert sock.getsockname() == ("192.0.2.77", 8080)
    finally:
        sock.close()


def test_http_reply() -> None:
    assert http_reply(400, "Bad Request", "no\n") == (
        b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\nno\n"
    )


ROUTED_CONFIG = """
vips:
  - name: web
    address: 10.0.0.100
    port: 80
    members:
      - {name: h1, address: 10.0.0.11, port: 8080, mac: "00:00:00:00:00:11"}
      - {name: h2, address: 10.0.0.12, port: 8080, mac: "00:00:00:00:00:12"}
    pools:
      - {name: api, members: [h1]}
    rules:
      - {match: {cookie: {name: NLBSESS}}, pin: cookie}
      - {match: {path_prefix: /api/}, pool: %s}
  - name: plain
    address: 10.0.0.101
    port: 80
    members: [{address: 10.0.0.13, port: 80, mac: "00:00:00:00:00:13"}]
"""


@pytest.mark.skipif("rules" not in Vip.model_fields, reason="rules and pools are not in the VIP schema yet")
def test_services_from_the_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "lb.yaml"
    path.write_text(ROUTED_CONFIG % "api")
    services = load_services(str(path), [])
    assert [s.name for s in services] == ["web"] and services[0].rules[1].pool == "api"
    assert [s.name for s in load_services(str(path), ["plain"])] == ["plain"]
    assert cli_main(["check-config", "--config", str(path)]) == 0
    assert "web 10.0.0.100:80: 2 members, 1 pools, 2 rules" in capsys.readouterr().out
    path.write_text(ROUTED_CONFIG % "images")
    with pytest.raises(ConfigError) as info:
        load_services(str(path), [])
    assert (info.value.key, info.value.reason) == ("vips[web]", "rules[1].pool: unknown pool 'images'")
