"""The request router daemon (SPEC §2.3, FIG. 33 steps 3302-3304): accept on the VIPs, peek, decide, hand off.

Each connection is accepted by the ordinary kernel stack on a VIP address (held on a loopback interface; the
listening sockets use ``IP_FREEBIND`` so they bind before the address exists). The router peeks at the first request
with ``MSG_PEEK`` (the bytes stay queued, bounded in size and time), decides with :func:`choose`, picks the member
(the pinned one, or weighted round-robin over the pool) and calls a :class:`Migrator`. A migrator that declines hands
the connection to the proxy fallback. Counters are served as JSON on a local status port.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import signal
import socket
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from nlb_sdn.affinity.sessions import SessionTable
from nlb_sdn.config import Config, Vip
from nlb_sdn.config.routing import Pool, RouteRule
from nlb_sdn.core.selection import SmoothWeightedRoundRobin
from nlb_sdn.dam.atoms import any_type_session_key
from nlb_sdn.metrics import CONTENT_TYPE, exposition, http_response
from nlb_sdn.metrics.router import router_registry
from nlb_sdn.router.admission import Admission
from nlb_sdn.router.parse import ClientHello, HttpRequest, Limits, NeedMore, ParseError, parse_http_head, parse_request
from nlb_sdn.router.rules import Decision, SessionLookup, choose

log = logging.getLogger("nlb_sdn.router")

IP_FREEBIND = 15
"""``IP_FREEBIND`` from ``<linux/in.h>`` (the socket module of Python 3.11 does not export it)."""
REPLY_TIMEOUT = 1.0
LINGER_BYTES = 64 * 1024
STATUS_HEAD_LIMIT = 8192
DECISION_REASONS = ("rule", "cookie", "tls_session_id", "default")


class Outcome(enum.StrEnum):
    """What a migrator did with a connection."""

    MIGRATED = "migrated"
    """The connection now lives on the member; the router's socket is closed."""
    PROXIED = "proxied"
    """The router relays the connection's bytes to the member."""
    DECLINED = "declined"
    """Not taken (for example the migration timed out and was undone); the socket is still the caller's and intact."""
    FAILED = "failed"
    """The connection is lost (for example the member refused it); the socket is closed."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """The member a connection goes to: VIP service name, member name, address and port.

    ``alternatives`` are the other candidates of the decision's pool (none for a pinned member), in the order a
    migrator that the chosen member declines may try them.
    """

    vip: str
    member: str
    address: str
    port: int
    alternatives: tuple[Endpoint, ...] = ()


class Migrator(Protocol):
    """Hands an accepted connection, whose first request is still queued in the kernel, over to a member.

    The migrator owns the socket from the call on, except when it returns DECLINED. It must return within its own
    timeout and leave no state behind on DECLINED (a TCP_REPAIR migrator turns repair off again).
    """

    async def migrate(self, sock: socket.socket, member: Endpoint) -> Outcome:
        """Hand ``sock`` over to ``member``; what happened."""


@runtime_checkable
class MigratorWithStats(Migrator, Protocol):
    """A migrator that keeps counters of its own (served under ``migration`` in the router's stats)."""

    def stats(self) -> dict[str, Any]:
        """The migrator's counters."""


class _Activity:
    """When a relayed connection last moved bytes in either direction."""

    __slots__ = ("last",)

    def __init__(self, now: float) -> None:
        self.last = now


class RelayEnd(enum.StrEnum):
    """How a proxy relay ended (counted under ``relays_ended`` in the router's stats)."""

    COMPLETED = "completed"
    """Both directions reached their end of stream."""
    IDLE_TIMEOUT = "idle_timeout"
    """No bytes moved either way (or a peer stopped reading) for the idle timeout."""
    ERROR = "error"
    """A socket error (for example a reset) ended it."""
    STOPPED = "stopped"
    """The router stopped."""


class ProxyMigrator:
    """The fallback hand-off: the router connects to the member itself and relays bytes both ways (bounded)."""

    def __init__(
        self,
        connect_timeout: float = 2.0,
        idle_timeout: float = 60.0,
        buffer_size: int = 65536,
        on_relay_end: Callable[[socket.socket], None] | None = None,
    ) -> None:
        """A proxy with a connect timeout, an idle timeout (no bytes either way) and a per-read buffer size;
        ``on_relay_end`` is called with the client socket once its relay has ended and both sockets are closed."""
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.buffer_size = buffer_size
        self.on_relay_end = on_relay_end
        self.ended: Counter[RelayEnd] = Counter({end: 0 for end in RelayEnd})
        self._relays: dict[socket.socket, asyncio.Task[None]] = {}

    @property
    def active(self) -> int:
        """Connections being relayed."""
        return len(self._relays)

    def relays(self, client: socket.socket) -> bool:
        """Whether ``client`` is being relayed."""
        return client in self._relays

    async def migrate(self, sock: socket.socket, member: Endpoint) -> Outcome:
        """Connect to ``member`` and start relaying; PROXIED once connected, FAILED (socket closed) otherwise."""
        loop = asyncio.get_running_loop()
        upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        upstream.setblocking(False)
        try:
            async with asyncio.timeout(self.connect_timeout):
                await loop.sock_connect(upstream, (member.address, member.port))
        except (OSError, TimeoutError) as exc:
            log.info(
                "proxy to %s %s:%d failed: %s",
                member.member,
                member.address,
                member.port,
                str(exc) or type(exc).__name__,
            )
            upstream.close()
            sock.close()
            return Outcome.FAILED
        relay = asyncio.create_task(self._relay(sock, upstream))
        self._relays[sock] = relay
        relay.add_done_callback(lambda _: self._relay_done(sock, upstream))
        return Outcome.PROXIED

    async def close(self) -> None:
        """Stop every relay and close its sockets."""
        relays = list(self._relays.values())
        for relay in relays:
            relay.cancel()
        await asyncio.gather(*relays, return_exceptions=True)

    def _relay_done(self, client: socket.socket, upstream: socket.socket) -> None:
        """Close a finished relay's sockets (even one cancelled before it ran), forget it and report its end."""
        client.close()
        upstream.close()
        del self._relays[client]
        if self.on_relay_end is not None:
            self.on_relay_end(client)

    async def _relay(self, client: socket.socket, upstream: socket.socket) -> None:
        """Relay both directions until both have ended, one fails, or the connection idles out."""
        activity = _Activity(asyncio.get_running_loop().time())
        end = RelayEnd.STOPPED
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._pump(client, upstream, activity))
                group.create_task(self._pump(upstream, client, activity))
            end = RelayEnd.COMPLETED
        except* TimeoutError:
            end = RelayEnd.IDLE_TIMEOUT
            log.debug("relay idle for %g s: closed", self.idle_timeout)
        except* OSError as errors:
            end = RelayEnd.ERROR
            log.debug("relay ended: %s", errors.exceptions[0])
        finally:
            self.ended[end] += 1

    async def _pump(self, source: socket.socket, sink: socket.socket, activity: _Activity) -> None:
        """Copy ``source`` to ``sink`` one buffer at a time; pass the end of stream on as a half-close.

        Raises TimeoutError once no bytes have moved either way for the idle timeout, or ``sink`` took none for as
        long."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                async with asyncio.timeout_at(activity.last + self.idle_timeout):
                    data = await loop.sock_recv(source, self.buffer_size)
            except TimeoutError:
                if loop.time() - activity.last < self.idle_timeout:
                    continue
                raise
            if not data:
                sink.shutdown(socket.SHUT_WR)
                return
            activity.last = loop.time()
            async with asyncio.timeout(self.idle_timeout):
                await loop.sock_sendall(sink, data)


@dataclass(frozen=True, slots=True)
class ServiceMember:
    """A member of a routed VIP service, as the router needs it."""

    name: str
    address: str
    port: int
    weight: int = 1
    state: str = "active"


@dataclass(frozen=True, slots=True)
class Service:
    """A routed VIP service: where it listens, its members, pools and rules."""

    name: str
    address: str
    port: int
    members: tuple[ServiceMember, ...]
    pools: tuple[Pool, ...] = ()
    rules: tuple[RouteRule, ...] = ()
    draining_keeps_sessions: bool = True

    @classmethod
    def from_vip(cls, vip: Vip) -> Service:
        """The service of a configured VIP."""
        members = tuple(ServiceMember(m.name, m.address, m.port, m.weight, m.state) for m in vip.members)
        return cls(
            vip.name, vip.address, vip.port, members, tuple(vip.pools), tuple(vip.rules), vip.draining_keeps_sessions
        )

    def member(self, name: str) -> ServiceMember | None:
        """The member called ``name``, if any."""
        return next((m for m in self.members if m.name == name), None)

    def candidates(self, pool: str | None) -> list[ServiceMember]:
        """The active members with a positive weight, of ``pool`` or (None) of the whole service."""
        names = None if pool is None else next((set(p.members) for p in self.pools if p.name == pool), set())
        return [m for m in self.members if m.state == "active" and m.weight > 0 and (names is None or m.name in names)]

    def session_eligible(self, name: str) -> bool:
        """Whether a session on member ``name`` may still take the client's new connections."""
        member = self.member(name)
        return member is not None and (
            member.state == "active" or (member.state == "draining" and self.draining_keeps_sessions)
        )


def services_from_config(config: Config, names: Sequence[str] = ()) -> list[Service]:
    """The services the router serves: the VIPs called ``names``, or by default every VIP with pools or rules."""
    unknown = [name for name in names if config.vip(name) is None]
    if unknown:
        raise ValueError(f"no VIP called {unknown[0]!r} in the config")
    vips = [config.vip(name) for name in names] if names else [v for v in config.vips if v.pools or v.rules]
    return [Service.from_vip(vip) for vip in vips if vip is not None]


class MemberChooser(Protocol):
    """Picks the member for a decision that pinned none (the seam for the controller's allotment)."""

    def pick(self, service: Service, pool: str | None) -> ServiceMember | None:
        """The member for the next connection to ``pool`` (None: the whole service), or None if none is eligible."""


class WeightedRoundRobinChooser:
    """Smooth weighted round-robin over the active members of each (service, pool), by their configured weights."""

    def __init__(self) -> None:
        self._selectors: dict[tuple[str, str | None], SmoothWeightedRoundRobin] = {}

    def pick(self, service: Service, pool: str | None) -> ServiceMember | None:
        """The next member of ``pool`` of ``service``, or None if no member is active with a positive weight."""
        return self.pick_weighted(service, pool, {m.name: m.weight for m in service.candidates(pool)})

    def pick_weighted(self, service: Service, pool: str | None, weights: dict[str, int]) -> ServiceMember | None:
        """The next member of ``pool`` of ``service`` by ``weights`` (member name to weight), or None."""
        selector = self._selectors.get((service.name, pool))
        if selector is None:
            selector = self._selectors[(service.name, pool)] = SmoothWeightedRoundRobin(weights)
        else:
            selector.update(weights)
        name = selector.pick()
        return None if name is None else service.member(name)


def table_lookup(table: SessionTable, service: Service, clock: Callable[[], float] = time.time) -> SessionLookup:
    """A session lookup for ``service`` over a session table: live sessions of the service on eligible members."""

    def lookup(stype: str, sid: str) -> str | None:
        session = table.sessions.get(any_type_session_key(stype, sid))
        if session is None or session.vip != service.name:
            return None
        if session.expires_at <= clock():
            table.remove(session.key)
            return None
        return session.member if service.session_eligible(session.member) else None

    return lookup


class RouterSettings(BaseModel):
    """The router's limits, timers and status address."""

    model_config = ConfigDict(extra="forbid")

    max_head: int = Field(default=8192, ge=256, le=65536)
    max_header_line: int = Field(default=4096, ge=64, le=65536)
    max_headers: int = Field(default=64, ge=1, le=1000)
    max_hello: int = Field(default=16384, ge=512, le=65536)
    head_timeout: float = Field(default=5.0, gt=0, le=300)
    max_peeks: int = Field(default=64, ge=1, le=10000)
    connect_timeout: float = Field(default=2.0, gt=0, le=60)
    proxy_idle_timeout: float = Field(default=60.0, gt=0, le=86400)
    proxy_buffer: int = Field(default=65536, ge=1024, le=1 << 20)
    max_connections: int = Field(default=1024, ge=1, le=1_000_000)
    max_connections_per_client: int = Field(default=64, ge=1, le=1_000_000)
    backlog: int = Field(default=512, ge=1, le=65535)
    fallback: Literal["proxy", "close"] = "proxy"
    status_host: str = "127.0.0.1"
    status_port: int = Field(default=9180, ge=0, le=65535)

    @property
    def limits(self) -> Limits:
        """The parser limits."""
        return Limits(self.max_head, self.max_header_line, self.max_headers, self.max_hello)


def listen_socket(address: str, port: int, backlog: int) -> socket.socket:
    """A non-blocking listening TCP socket on ``address:port``, bound even before the address is configured."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
        sock.bind((address, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


async def _readable(sock: socket.socket) -> None:
    """Wait until ``sock`` is readable (honouring its SO_RCVLOWAT)."""
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    fd = sock.fileno()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


def http_reply(status: int, reason: str, body: str) -> bytes:
    """A complete ``Connection: close`` response with a plain-text body."""
    data = body.encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {len(data)}\r\n"
        f"Connection: close\r\n\r\n"
    ).encode() + data


class Router:
    """A running request router: its listening sockets, status server, decisions, hand-offs and counters."""

    def __init__(
        self,
        services: Sequence[Service],
        settings: RouterSettings | None = None,
        migrator: Migrator | None = None,
        chooser: MemberChooser | None = None,
        sessions: SessionTable | None = None,
    ) -> None:
        """A router for ``services``; without a migrator it proxies, with one it falls back as settings say."""
        self.services = list(services)
        self.settings = settings or RouterSettings()
        self.limits = self.settings.limits
        self.admission = Admission(self.settings.max_connections, self.settings.max_connections_per_client)
        self.proxy = ProxyMigrator(
            self.settings.connect_timeout,
            self.settings.proxy_idle_timeout,
            self.settings.proxy_buffer,
            on_relay_end=self.admission.release,
        )
        self.migrator: Migrator = migrator or self.proxy
        use_fallback = migrator is not None and self.settings.fallback == "proxy"
        self.fallback: Migrator | None = self.proxy if use_fallback else None
        self.chooser: MemberChooser = chooser or WeightedRoundRobinChooser()
        self.sessions = sessions if sessions is not None else SessionTable()
        self._lookups = {s.name: table_lookup(self.sessions, s) for s in self.services}
        self._listeners: list[tuple[socket.socket, Service]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._active = 0
        self._peak_open = 0
        self._status: asyncio.Server | None = None
        self._started = time.monotonic()
        self.counters: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        self.decided: Counter[str] = Counter({reason: 0 for reason in DECISION_REASONS})
        self.rule_hits = {s.name: [0] * len(s.rules) for s in self.services}
        self.member_hits: dict[str, Counter[str]] = {s.name: Counter() for s in self.services}
        self.registry = router_registry(self.stats, [(s.name, m.name) for s in self.services for m in s.members])
        """The router's Prometheus metrics, served as ``GET /metrics`` on the status port."""

    @property
    def addresses(self) -> list[tuple[str, str, int]]:
        """(service, address, port) of every listening socket."""
        return [(service.name, *sock.getsockname()[:2]) for sock, service in self._listeners]

    @property
    def status_address(self) -> tuple[str, int] | None:
        """Where the status server listens, once started."""
        if self._status is None or not self._status.sockets:
            return None
        host, port = self._status.sockets[0].getsockname()[:2]
        return host, port

    def stats(self) -> dict[str, Any]:
        """The counters: every accepted connection ends in exactly one of the outcome counters."""
        return {
            "accepted": self.counters["accepted"],
            "active": self._active,
            "relaying": self.proxy.active,
            "open": self.admission.open,
            "peak_open": self._peak_open,
            "clients": self.admission.clients,
            "relays_ended": {str(end): count for end, count in self.proxy.ended.items()},
            "decided": dict(self.decided),
            "migrated": self.counters["migrated"],
            "proxied": self.counters["proxied"],
            "failed": self.counters["failed"],
            "bad_request": self.counters["bad_request"],
            "closed": self.counters["closed"],
            "reasons": dict(sorted(self.reasons.items())),
            "services": {
                s.name: {"rules": list(self.rule_hits[s.name]), "members": dict(self.member_hits[s.name])}
                for s in self.services
            },
            "uptime_s": round(time.monotonic() - self._started, 3),
            **({"migration": self.migrator.stats()} if isinstance(self.migrator, MigratorWithStats) else {}),
        }

    async def start(self) -> None:
        """Open the listening sockets and the status server, and start accepting."""
        loop = asyncio.get_running_loop()
        try:
            for service in self.services:
                sock = listen_socket(service.address, service.port, self.settings.backlog)
                self._listeners.append((sock, service))
            self._status = await asyncio.start_server(
                self._serve_status, self.settings.status_host, self.settings.status_port, limit=STATUS_HEAD_LIMIT
            )
        except OSError:
            for sock, _ in self._listeners:
                sock.close()
            self._listeners.clear()
            raise
        self._started = time.monotonic()
        for sock, service in self._listeners:
            self._spawn(self._accept(loop, sock, service))

    async def stop(self) -> None:
        """Stop accepting, end every connection in progress and relay, and close the sockets."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.proxy.close()
        self.admission.close_all()
        for sock, _ in self._listeners:
            sock.close()
        self._listeners.clear()
        if self._status is not None:
            self._status.close()
            await self._status.wait_closed()

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Run ``coroutine`` as a task the router tracks and cancels on stop."""
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self, loop: asyncio.AbstractEventLoop, listener: socket.socket, service: Service) -> None:
        """Accept connections for ``service`` forever; one over the cap or its client's limit is closed at once.

        The slot is taken right after the accept, with no await in between, so the cap is exact however many
        connections arrive together."""
        while True:
            try:
                conn, peer = await loop.sock_accept(listener)
            except OSError as exc:
                log.warning("accept on %s: %s", service.name, exc)
                await asyncio.sleep(0.1)
                continue
            self.counters["accepted"] += 1
            refusal = self.admission.admit(conn, peer[0])
            if refusal is not None:
                conn.close()
                self._count_end("closed", refusal.value)
                continue
            self._peak_open = max(self._peak_open, self.admission.open)
            self._spawn(self._serve(conn, service))

    def _count_end(self, outcome: str, reason: str | None = None) -> None:
        """Count how a connection ended (and why, unless it was a success)."""
        self.counters[outcome] += 1
        if reason is not None:
            self.reasons[reason] += 1

    async def _serve(self, conn: socket.socket, service: Service) -> None:
        """Peek at the first request, decide, and hand the connection off (or answer an error and close)."""
        handed_off = False
        self._active += 1
        try:
            request = await self._peek_request(conn)
            if isinstance(request, ParseError):
                await self._reject(conn, request)
                return
            decision = choose(request, service.rules, service.pools, self._lookups[service.name])
            member = service.member(decision.member) if decision.member else self.chooser.pick(service, decision.pool)
            if member is None:
                if isinstance(request, HttpRequest):
                    await self._reply_and_close(conn, http_reply(503, "Service Unavailable", "no member\n"))
                self._count_end("failed", "no_member")
                return
            self._count_decision(service, decision, member.name)
            handed_off = True
            await self._hand_off(
                conn,
                Endpoint(
                    service.name,
                    member.name,
                    member.address,
                    member.port,
                    self._alternatives(service, decision, member.name),
                ),
            )
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("connection on %s", service.name)
            self._count_end("failed", "internal_error")
            conn.close()
        finally:
            self._active -= 1
            if not handed_off:
                conn.close()
            if not self.proxy.relays(conn):
                self.admission.release(conn)

    @staticmethod
    def _alternatives(service: Service, decision: Decision, chosen: str) -> tuple[Endpoint, ...]:
        """The other candidates of an unpinned decision's pool, for a migrator the chosen member declines."""
        if decision.member:
            return ()
        return tuple(
            Endpoint(service.name, m.name, m.address, m.port)
            for m in service.candidates(decision.pool)
            if m.name != chosen
        )

    def _count_decision(self, service: Service, decision: Decision, member: str) -> None:
        """Count a decision by reason, rule and member."""
        self.decided[decision.reason] += 1
        if decision.rule is not None:
            self.rule_hits[service.name][decision.rule] += 1
        self.member_hits[service.name][member] += 1
        log.debug(
            "%s: %s (rule %s, pool %s) -> %s", service.name, decision.reason, decision.rule, decision.pool, member
        )

    async def _hand_off(self, conn: socket.socket, endpoint: Endpoint) -> None:
        """Call the migrator, and the fallback if it declines; count the outcome."""
        outcome = await self.migrator.migrate(conn, endpoint)
        if outcome is Outcome.DECLINED and self.fallback is not None:
            self.reasons["migration_declined"] += 1
            outcome = await self.fallback.migrate(conn, endpoint)
        if outcome is Outcome.DECLINED:
            conn.close()
            self._count_end("failed", "migration_declined")
        elif outcome is Outcome.FAILED:
            self._count_end("failed", "handoff_failed")
        else:
            self._count_end(outcome.value)

    async def _peek_request(self, conn: socket.socket) -> HttpRequest | ClientHello | ParseError:
        """Peek until the first request parses or fails, the client goes, or the head timeout or max_peeks runs out."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.head_timeout
        peek_size = max(self.limits.max_head, self.limits.max_hello + 1)
        seen = 0
        try:
            for _ in range(self.settings.max_peeks):
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, seen + 1)
                try:
                    async with asyncio.timeout_at(deadline):
                        await _readable(conn)
                except TimeoutError:
                    return ParseError("timeout", f"no complete head within {self.settings.head_timeout} s")
                try:
                    data = conn.recv(peek_size, socket.MSG_PEEK)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    return ParseError("client_reset", str(exc))
                if len(data) <= seen:
                    return ParseError("client_closed", "the client closed before its head ended")
                seen = len(data)
                result = parse_request(data, self.limits)
                if not isinstance(result, NeedMore):
                    return result
            return ParseError("too_fragmented", f"no complete head in {self.settings.max_peeks} reads")
        finally:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)

    async def _reject(self, conn: socket.socket, error: ParseError) -> None:
        """Answer a bad HTTP head with 400 and close; close anything else at once."""
        log.debug("rejected: %s (%s)", error.reason, error.detail)
        if error.deserves_400:
            await self._reply_and_close(conn, http_reply(400, "Bad Request", f"bad request: {error.reason}\n"))
            self._count_end("bad_request", error.reason)
        else:
            self._count_end("closed", error.reason)

    async def _reply_and_close(self, conn: socket.socket, reply: bytes) -> None:
        """Send ``reply``, half-close, and read what the client still sends (bounded) so the close sends no RST."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(REPLY_TIMEOUT):
                await loop.sock_sendall(conn, reply)
                conn.shutdown(socket.SHUT_WR)
                drained = 0
                while drained < LINGER_BYTES:
                    data = await loop.sock_recv(conn, LINGER_BYTES)
                    if not data:
                        break
                    drained += len(data)
        except (OSError, TimeoutError):
            pass
        finally:
            conn.close()

    async def _serve_status(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer one status request: ``GET /`` or ``GET /stats`` gives the counters as JSON, ``GET /metrics`` the
        Prometheus metrics."""
        try:
            async with asyncio.timeout(REPLY_TIMEOUT * 5):
                head = await reader.readuntil(b"\r\n\r\n")
            request = parse_http_head(head)
            if not isinstance(request, HttpRequest):
                reply = http_reply(400, "Bad Request", "bad request\n")
            elif request.method != "GET":
                reply = http_reply(405, "Method Not Allowed", "only GET\n")
            elif request.path == "/metrics":
                reply = http_response("200 OK", CONTENT_TYPE, exposition(self.registry))
            elif request.path not in ("/", "/stats"):
                reply = http_reply(404, "Not Found", "GET /stats or /metrics\n")
            else:
                body = json.dumps(self.stats()).encode()
                reply = (
                    f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                    "Connection: close\r\n\r\n"
                ).encode() + body
            writer.write(reply)
            await writer.drain()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def run(self) -> None:
        """Start, then serve until SIGTERM or SIGINT, then stop."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await self.start()
        for name, host, port in self.addresses:
            log.info("serving %s on %s:%d", name, host, port)
        listening = ", ".join(f"{host}:{port} ({name})" for name, host, port in self.addresses)
        status_host, status_port = self.status_address or ("-", 0)
        print(f"nlb-sdn-router listening on {listening}; status http://{status_host}:{status_port}/stats", flush=True)
        await stop.wait()
        await self.stop()
        log.info("stopped")
