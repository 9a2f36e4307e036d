"""The request router's limits on loopback, with the real daemon: an exact connection cap however many connections
arrive together, a per-client limit, head and idle timeouts that give the slots back, and their counters.

The router runs on an event loop in a background thread (as in ``test_router_daemon``); clients use blocking
sockets with timeouts; every wait polls for its condition and is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from nlb_sdn.config.routing import Pool
from nlb_sdn.router.admission import Admission, Refusal
from nlb_sdn.router.cli import build_parser, settings_from_args
from nlb_sdn.router.daemon import Router, RouterSettings, Service, ServiceMember
from tests.lib.net import exchange, free_port
from tests.lib.polling import poll_until
from tests.lib.router import route_rules as rules
from tests.unit.test_router_daemon import Backends, LoopThread, closed_without_reply, get

TIMEOUT = 5.0
IDLE = 0.5
FLOODER = "127.0.0.3"


class HoldingBackends(Backends):
    """Test servers, plus ones that read a request head and then hold the connection (or echo what follows)."""

    def hold(self, name: str) -> int:
        """A backend that reads the head, never answers and closes when the router does; its port."""

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                self.received[name].append(await reader.readuntil(b"\r\n\r\n"))
                await asyncio.wait_for(reader.read(), TIMEOUT * 4)
            except (OSError, TimeoutError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        return self._start(name, handle)

    def echo(self, name: str) -> int:
        """A backend that echoes every byte it gets; its port."""

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await asyncio.wait_for(reader.read(4096), TIMEOUT):
                    writer.write(data)
                    await writer.drain()
            except (OSError, TimeoutError):
                pass
            finally:
                writer.close()

        return self._start(name, handle)


class LimitsLab:
    """The ``web`` service: ``/hold`` to a backend that holds, ``/echo`` to an echo backend, the rest to ``a``."""

    def __init__(self, loop: LoopThread) -> None:
        self.loop = loop
        self.backends = HoldingBackends(loop)
        members = (
            ServiceMember("a", "127.0.0.1", self.backends.http("a")),
            ServiceMember("hold", "127.0.0.1", self.backends.hold("hold")),
            ServiceMember("echo", "127.0.0.1", self.backends.echo("echo")),
        )
        self.web = Service(
            "web",
            "127.0.0.1",
            free_port(),
            members,
            pools=(Pool(name="A", members=["a"]), Pool(name="H", members=["hold"]), Pool(name="E", members=["echo"])),
            rules=rules(
                {"match": {"path_prefix": "/hold"}, "pool": "H"},
                {"match": {"path_prefix": "/echo"}, "pool": "E"},
                {"match": {"path_prefix": "/"}, "pool": "A"},
            ),
        )
        self.routers: list[Router] = []
        self.clients: list[socket.socket] = []

    @property
    def port(self) -> int:
        """The service's port."""
        return self.web.port

    def router(self, **settings: Any) -> Router:
        """A started router for ``web`` with ``settings`` (any free status port)."""
        router = Router([self.web], RouterSettings(status_port=0, **settings))
        self.loop.run(router.start())
        self.routers.append(router)
        return router

    def connect(self, source: str = "127.0.0.1") -> socket.socket:
        """A client connection to the service from ``source`` (closed with the lab)."""
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT, source_address=(source, 0))
        self.clients.append(sock)
        return sock

    def stats_when(self, router: Router, condition: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The router's counters once ``condition`` holds for them (or, after TIMEOUT, as they are)."""

        def check() -> dict[str, Any] | None:
            stats = self.loop.call(router.stats)
            return stats if condition(stats) else None

        return poll_until(check, TIMEOUT, 0.02) or self.loop.call(router.stats)

    @contextlib.contextmanager
    def loop_blocked(self) -> Iterator[None]:
        """Hold the router's event loop still for the block, so connections made meanwhile queue up in the kernel's
        backlog and the router then accepts them all at once."""
        entered, gate = threading.Event(), threading.Event()

        def block() -> None:
            entered.set()
            gate.wait(TIMEOUT)

        self.loop.loop.call_soon_threadsafe(block)
        assert entered.wait(TIMEOUT)
        try:
            yield
        finally:
            gate.set()

    def close(self) -> None:
        """Close the clients, stop the routers and the backends."""
        for sock in self.clients:
            sock.close()
        for router in self.routers:
            self.loop.run(router.stop())
        self.backends.close()


@pytest.fixture
def limits() -> Iterator[LimitsLab]:
    """The lab on a fresh event loop thread."""
    loop = LoopThread()
    lab = LimitsLab(loop)
    try:
        yield lab
    finally:
        lab.close()
        loop.close()


def request(path: str) -> bytes:
    """A GET head for ``path``."""
    return f"GET {path} HTTP/1.1\r\nHost: www.example.com\r\n\r\n".encode()


def reply_of(sock: socket.socket, data: bytes) -> bytes:
    """Send ``data`` on ``sock`` and read until the router closes or resets it; what came back."""
    reply = b""
    with contextlib.suppress(ConnectionResetError, BrokenPipeError):
        sock.sendall(data)
        while chunk := sock.recv(65536):
            reply += chunk
    return reply


def test_the_cap_is_exact_when_connections_arrive_together(limits: LimitsLab) -> None:
    router = limits.router(max_connections=3, max_connections_per_client=100, head_timeout=TIMEOUT)
    with limits.loop_blocked():
        clients = [limits.connect() for _ in range(10)]
    stats = limits.stats_when(router, lambda s: s["accepted"] == 10 and s["open"] == 3)
    assert stats["reasons"] == {"over_capacity": 7} and stats["open"] == stats["peak_open"] == 3
    replies = [reply_of(sock, request("/x")) for sock in clients]
    assert sum(reply.startswith(b"HTTP/1.1 200 OK") for reply in replies) == 3
    assert sum(reply == b"" for reply in replies) == 7
    for sock in clients:
        sock.close()
    stats = limits.stats_when(router, lambda s: s["open"] == 0)
    assert stats["open"] == 0 and stats["peak_open"] == 3 and stats["proxied"] == 3 and stats["closed"] == 7


def test_concurrent_connects_never_exceed_the_cap(limits: LimitsLab) -> None:
    router = limits.router(max_connections=5, max_connections_per_client=100)
    replies: list[bytes] = []
    threads = [
        threading.Thread(target=lambda: replies.append(exchange(limits.port, request("/hold/x")))) for _ in range(30)
    ]
    for thread in threads:
        thread.start()
    stats = limits.stats_when(router, lambda s: s["accepted"] == 30 and s["relaying"] == 5)
    assert stats["peak_open"] == stats["open"] == stats["relaying"] == 5 and stats["reasons"] == {"over_capacity": 25}
    limits.loop.run(router.stop())
    for thread in threads:
        thread.join(TIMEOUT)
    assert replies == [b""] * 30


def test_a_client_over_its_limit_is_refused_while_others_are_served(limits: LimitsLab) -> None:
    router = limits.router(max_connections=10, max_connections_per_client=2, head_timeout=TIMEOUT * 4)
    flood = [limits.connect(FLOODER) for _ in range(6)]
    stats = limits.stats_when(router, lambda s: s["accepted"] == 6 and s["open"] == 2)
    assert stats["reasons"] == {"over_client_limit": 4} and stats["clients"] == 1
    assert limits.loop.call(lambda: router.admission.held_by(FLOODER)) == 2
    assert get(limits.port, "/served")[:2] == (200, "a")
    assert reply_of(limits.connect(FLOODER), request("/refused")) == b""
    stats = limits.stats_when(router, lambda s: s["reasons"].get("over_client_limit") == 5)
    assert stats["reasons"] == {"over_client_limit": 5} and stats["proxied"] == 1
    for sock in flood:
        sock.close()
    limits.stats_when(router, lambda s: s["open"] == 0)
    assert reply_of(limits.connect(FLOODER), request("/again")).startswith(b"HTTP/1.1 200 OK")


def test_idle_proxied_connections_are_reaped_and_the_cap_recovers(limits: LimitsLab) -> None:
    router = limits.router(max_connections=4, max_connections_per_client=100, proxy_idle_timeout=IDLE)
    idle = [limits.connect() for _ in range(4)]
    for index, sock in enumerate(idle):
        sock.sendall(request(f"/hold/{index}"))
    limits.stats_when(router, lambda s: s["relaying"] == 4)
    assert exchange(limits.port, request("/locked-out")) == b""
    started = time.monotonic()
    assert all(closed_without_reply(sock) for sock in idle)
    assert IDLE * 0.8 < time.monotonic() - started < IDLE + TIMEOUT
    stats = limits.stats_when(router, lambda s: s["open"] == 0)
    assert stats["relays_ended"]["idle_timeout"] == 4 and stats["reasons"] == {"over_capacity": 1}
    assert get(limits.port, "/recovered")[0] == 200


def test_a_relay_that_keeps_moving_bytes_outlives_the_idle_timeout(limits: LimitsLab) -> None:
    router = limits.router(proxy_idle_timeout=IDLE)
    sock = limits.connect()
    head = request("/echo")
    sock.sendall(head)
    echoed = b""
    while len(echoed) < len(head):
        echoed += sock.recv(4096)
    started = time.monotonic()
    while time.monotonic() - started < IDLE * 2:
        sock.sendall(b"!")
        assert sock.recv(1) == b"!"
        time.sleep(IDLE / 4)
    assert limits.loop.call(router.stats)["relays_ended"]["idle_timeout"] == 0
    assert closed_without_reply(sock)
    assert limits.stats_when(router, lambda s: s["open"] == 0)["relays_ended"]["idle_timeout"] == 1


def test_a_silent_client_gives_its_slot_back_after_the_head_timeout(limits: LimitsLab) -> None:
    router = limits.router(max_connections=1, head_timeout=IDLE)
    silent = limits.connect()
    limits.stats_when(router, lambda s: s["open"] == 1)
    assert exchange(limits.port, request("/locked-out")) == b""
    assert closed_without_reply(silent)
    half = limits.connect()
    half.sendall(b"GET /half HTTP/1.1\r\nHost: a\r\n")
    assert closed_without_reply(half)
    stats = limits.stats_when(router, lambda s: s["open"] == 0 and s["accepted"] == 3)
    assert stats["reasons"] == {"over_capacity": 1, "timeout": 2}
    assert get(limits.port, "/recovered")[0] == 200


def test_admission_counts_each_slot_once() -> None:
    admission = Admission(max_connections=3, max_per_client=2)
    socks = [socket.socket() for _ in range(4)]
    try:
        assert [admission.admit(sock, "10.0.0.1") for sock in socks[:3]] == [None, None, Refusal.OVER_CLIENT_LIMIT]
        assert admission.admit(socks[2], "10.0.0.2") is None
        assert admission.admit(socks[3], "10.0.0.3") is Refusal.OVER_CAPACITY
        admission.release(socks[0])
        admission.release(socks[0])
        assert (admission.open, admission.clients, admission.held_by("10.0.0.1")) == (2, 2, 1)
        assert admission.admit(socks[3], "10.0.0.1") is None
        admission.close_all()
        assert (admission.open, admission.clients) == (0, 0) and socks[1].fileno() == -1
    finally:
        for sock in socks:
            sock.close()


def test_defaults_and_flags_bound_what_one_client_and_idle_connections_hold() -> None:
    defaults = RouterSettings()
    assert defaults.proxy_idle_timeout <= 60 and defaults.head_timeout <= 10
    assert defaults.max_connections_per_client * 8 <= defaults.max_connections
    args = build_parser().parse_args(
        ["run", "--config", "lb.yaml", "--idle-timeout", "7", "--max-connections", "50", "--max-per-client", "5"]
    )
    settings = settings_from_args(args)
    assert (settings.proxy_idle_timeout, settings.max_connections, settings.max_connections_per_client) == (7, 50, 5)
    with pytest.raises(ValueError):
        settings_from_args(build_parser().parse_args(["run", "--config", "lb.yaml", "--max-per-client", "0"]))
