"""The agent process (asyncio shell around :class:`AgentCore`): UDP socket, timers, probes, control socket, signals.

Control socket protocol: one JSON request line, one JSON reply line. Requests: ``{"cmd": "table"}``,
``{"cmd": "set-target", "app_id": ..., "target": ...}``, ``{"cmd": "set-load", "app_id": ..., "load": ...}``,
``{"cmd": "session-up", "app_id": ..., "sid": ..., "client": ..., "ttl_s": 600, "stype": "app"}`` (``ttl_s`` and
``stype`` optional), ``{"cmd": "session-down", "app_id": ..., "sid": ...}``, ``{"cmd": "sessions"}``.
Replies carry ``"ok": true`` (and the table for ``table``, the row for ``set-*``, the session for ``session-*``, the
sessions for ``sessions``), or ``"ok": false`` and an ``"error"``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import signal
import socket
import stat
import threading
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

from nlb_sdn.agent.checks import run_check, sample_load
from nlb_sdn.agent.config import AgentConfig, App, StaticLoad
from nlb_sdn.agent.core import DEFAULT_STYPE, SESSION_TTL, AgentCore, Outgoing
from nlb_sdn.health.protocol import UDP_MAX_SIZE, Verifier
from nlb_sdn.health.table import TARGET_STATES, Row
from nlb_sdn.metrics import serve_metrics
from nlb_sdn.metrics.agent import agent_registry
from nlb_sdn.migration.receiver import MigrationServer, Receiver
from nlb_sdn.signed import OneKey, SequenceCounter, encode

log = logging.getLogger("nlb_sdn.agent")

GOODBYE_SPACING = 0.02
CONTROL_TIMEOUT = 5.0
CONTROL_LIMIT = 64 * 1024


class Agent:
    """A running host agent: owns the UDP socket, the tasks and the control socket."""

    def __init__(self, config: AgentConfig, key: bytes, drop_next_row_change: bool = False) -> None:
        """An agent for ``config`` signing with its host ``key`` and taking only messages under it (the controller's,
        addressed to this host); the test hook drops the first row_change it would send."""
        self.config = config
        self.key = key
        self.core = AgentCore(config, time.time())
        self.verifier = Verifier(OneKey(config.host_id, key), UDP_MAX_SIZE, bind_src=False)
        self.seq = SequenceCounter()
        self.transport: asyncio.DatagramTransport | None = None
        self._drop_next_row_change = drop_next_row_change
        self.sent_types: Counter[str] = Counter()
        """Datagrams sent, by message type (each address counts)."""
        self.migrations: Receiver | None = None
        self.registry = agent_registry(self)
        """The agent's Prometheus metrics (``metrics`` in the config says where they are served)."""

    def send(self, outgoing: list[Outgoing]) -> None:
        """Sign each message once and send it to each of its addresses."""
        assert self.transport is not None
        for out in outgoing:
            if out.type == "row_change" and self._drop_next_row_change:
                self._drop_next_row_change = False
                log.warning("test hook: not sending row_change %s %s", out.body["op"], out.body["app_id"])
                continue
            data = encode(self.key, out.type, self.core.host_id, self.seq.next(), time.time(), out.body)
            if len(data) > UDP_MAX_SIZE:
                log.error("not sending %s: %d bytes is over the %d-byte limit", out.type, len(data), UDP_MAX_SIZE)
                continue
            for address in out.to:
                self.transport.sendto(data, address)
                self.sent_types[out.type] += 1

    def datagram(self, data: bytes, sender: tuple[str, int]) -> None:
        """Verify a received datagram and send the core's answer."""
        message = self.verifier.verify(data, time.time())
        if message is None:
            log.debug("dropped a datagram from %s:%d", *sender[:2])
            return
        self.send(self.core.on_message(message, (sender[0], sender[1]), time.time()))

    def table_view(self) -> dict[str, Any]:
        """The table and the receive counters, as the ``table`` control command returns them."""
        return {
            "host_id": self.core.host_id,
            "checksum": self.core.table.checksum,
            "rows": [row.to_dict() for row in self.core.table.rows()],
            "accepted": dict(self.verifier.accepted),
            "dropped": dict(self.verifier.dropped),
            **(
                {}
                if self.migrations is None
                else {
                    "migrations": {
                        "outcomes": dict(self.migrations.outcomes),
                        "refused_tickets": dict(self.migrations.tickets.refused),
                    }
                }
            ),
        }

    def rows(self) -> list[Row]:
        """The H&L table's rows (metrics)."""
        return list(self.core.table.rows())

    def received(self) -> Mapping[str, int]:
        """Datagrams accepted, by message type (metrics)."""
        return self.verifier.accepted

    def dropped(self) -> Mapping[str, int]:
        """Datagrams dropped, by reason (metrics)."""
        return self.verifier.dropped

    def sent(self) -> Mapping[str, int]:
        """Datagrams sent, by message type (metrics)."""
        return self.sent_types

    def sessions(self) -> int:
        """Live application sessions (metrics)."""
        return len(self.core.live_sessions())

    def migrations_taken(self) -> Mapping[str, int]:
        """Migrated connections taken, by outcome (metrics; none without a migration port)."""
        return self.migrations.outcomes if self.migrations is not None else {}

    def sessions_view(self) -> dict[str, Any]:
        """The session table, as the ``sessions`` control command returns it."""
        now = time.time()
        return {"host_id": self.core.host_id, "sessions": [s.to_dict(now) for s in self.core.live_sessions()]}

    def command(self, request: Any) -> dict[str, Any]:
        """Run one control command; the reply."""
        if not isinstance(request, dict):
            return {"ok": False, "error": "expected a JSON object"}
        cmd, app_id = request.get("cmd"), request.get("app_id")
        if cmd == "table":
            return {"ok": True, **self.table_view()}
        if cmd == "sessions":
            return {"ok": True, **self.sessions_view()}
        if cmd not in ("set-target", "set-load", "session-up", "session-down"):
            return {"ok": False, "error": f"unknown command {cmd!r}"}
        app = self.config.app(app_id) if isinstance(app_id, str) else None
        if app is None:
            return {"ok": False, "error": f"no app {app_id!r} on this host"}
        if cmd in ("session-up", "session-down"):
            return self._session_command(cmd, app.app_id, request)
        if cmd == "set-target":
            target = request.get("target")
            if target not in TARGET_STATES:
                return {"ok": False, "error": f"target must be one of {', '.join(TARGET_STATES)}"}
            self.send(self.core.set_target(app.app_id, target))
            log.info("%s target set to %s", app.app_id, target)
        else:
            load = request.get("load")
            if not isinstance(app.load, StaticLoad):
                return {"ok": False, "error": f"load of {app.app_id} comes from {app.load.type}, not static"}
            if isinstance(load, bool) or not isinstance(load, int | float) or not math.isfinite(load) or load < 0:
                return {"ok": False, "error": "load must be a finite number >= 0"}
            self.send(self.core.on_load(app.app_id, float(load)))
        row = self.core.table.get(app.app_id)
        assert row is not None
        return {"ok": True, "row": row.to_dict()}

    def _session_command(self, cmd: str, app_id: str, request: dict[str, Any]) -> dict[str, Any]:
        """Run ``session-up`` or ``session-down`` for ``app_id``; the reply with the session."""
        sid, now = request.get("sid"), time.time()
        if not isinstance(sid, str):
            return {"ok": False, "error": "sid must be a string"}
        if cmd == "session-down":
            session = self.core.sessions.get(sid)
            try:
                self.send(self.core.session_down(app_id, sid))
            except KeyError:
                return {"ok": False, "error": f"no session {sid!r} on this host"}
            except ValueError as exc:
                return {"ok": False, "error": str(exc)}
            assert session is not None
            log.info("session %s %s of %s on %s down", session.stype, sid, session.client, app_id)
            return {"ok": True, "session": session.to_dict(now)}
        client, ttl_s = request.get("client"), request.get("ttl_s", SESSION_TTL)
        if not isinstance(client, str):
            return {"ok": False, "error": "client must be an IPv4 address"}
        try:
            self.send(self.core.session_up(app_id, sid, client, now, ttl_s, request.get("stype", DEFAULT_STYPE)))
        except ValueError as exc:
            return {"ok": False, "error": str(exc)}
        session = self.core.sessions[sid]
        log.info("session %s %s of %s on %s up for %g s", session.stype, sid, session.client, app_id, session.ttl_s)
        return {"ok": True, "session": session.to_dict(now)}

    async def _control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one control connection: one request line, one reply line."""
        try:
            async with asyncio.timeout(CONTROL_TIMEOUT):
                line = await reader.readline()
            reply = self.command(json.loads(line))
        except (ValueError, RecursionError, TimeoutError) as exc:
            reply = {"ok": False, "error": f"bad request: {str(exc) or type(exc).__name__}"}
        try:
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _timers(self) -> None:
        """Send heartbeats, session refreshes and session expiries when the core says they are due."""
        while True:
            self.send(self.core.tick(time.time()))
            await asyncio.sleep(min(self.core.hb_period, max(0.0, self.core.next_deadline() - time.time())))

    async def _checks(self, app: App) -> None:
        """Probe ``app`` every check interval and feed the results to the core."""
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            success = await run_check(app.health, app.pip, app.pport)
            sent = self.core.on_check(app.app_id, success)
            if sent:
                log.info("%s health %s", app.app_id, sent[0].body["row"]["health"])
            self.send(sent)
            await asyncio.sleep(max(0.0, app.health.interval - (loop.time() - started)))

    async def _loads(self, app: App) -> None:
        """Sample ``app``'s load every load interval and feed it to the core."""
        assert not isinstance(app.load, StaticLoad)
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            load = await sample_load(app.load, app.pport)
            if load is not None:
                self.send(self.core.on_load(app.app_id, load))
            await asyncio.sleep(max(0.0, app.load.interval - (loop.time() - started)))

    async def _open_control(self) -> asyncio.AbstractServer:
        """Listen on the control socket (owner only), replacing a stale socket file but not a live agent's."""
        path = self.config.control_socket
        if os.path.exists(path) and stat.S_ISSOCK(os.stat(path).st_mode):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                if probe.connect_ex(path) == 0:
                    raise OSError(f"control socket {path} is in use by a running agent")
            os.unlink(path)
        server = await asyncio.start_unix_server(self._control, path=path, limit=CONTROL_LIMIT)
        os.chmod(path, 0o600)
        return server

    async def run(self) -> int:
        """Run until SIGTERM or SIGINT, then send goodbye three times; the exit status."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        reasons: list[str] = []

        def request_stop(name: str) -> None:
            reasons.append(name)
            stop.set()

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, request_stop, signum.name)
        self.transport, _ = await loop.create_datagram_endpoint(
            lambda: _Udp(self), local_addr=self.config.listen_address
        )
        try:
            control = await self._open_control()
        except OSError:
            self.transport.close()
            raise
        host, port = self.transport.get_extra_info("sockname")[:2]
        print(
            f"nlb-sdn-agent {self.core.host_id} listening on udp {host}:{port}, control {self.config.control_socket}",
            flush=True,
        )
        migrations = self._start_migrations()
        metrics = await self._start_metrics()
        self.send(self.core.start())
        tasks = [asyncio.create_task(self._timers())]
        tasks += [asyncio.create_task(self._checks(app)) for app in self.config.apps]
        tasks += [
            asyncio.create_task(self._loads(app)) for app in self.config.apps if not isinstance(app.load, StaticLoad)
        ]
        await stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        control.close()
        if metrics is not None:
            metrics.close()
        if migrations is not None:
            migrations.shutdown()
            migrations.server_close()
        for goodbye in self.core.stop(reasons[0]):
            self.send([goodbye])
            await asyncio.sleep(GOODBYE_SPACING)
        self.transport.close()
        os.unlink(self.config.control_socket)
        log.info("stopped (%s)", reasons[0])
        return 0

    async def _start_metrics(self) -> asyncio.Server | None:
        """The metrics server (``GET /metrics``), when the config asks for it."""
        if self.config.metrics is None:
            return None
        server = await serve_metrics(self.registry, self.config.metrics.host, self.config.metrics.port)
        host, port = server.sockets[0].getsockname()[:2]
        print(f"nlb-sdn-agent {self.core.host_id} serves metrics on http://{host}:{port}/metrics", flush=True)
        return server

    def _start_migrations(self) -> MigrationServer | None:
        """The migration port (FIG. 33 host side) in its own threads, when the config asks for it."""
        settings = self.config.migration
        if settings is None:
            return None
        self.migrations = Receiver(self.key, settings.handoff_socket, src=self.core.host_id)
        server = MigrationServer(self.migrations, settings.listen_address)
        threading.Thread(target=server.serve_forever, name="migrations", daemon=True).start()
        print(
            f"nlb-sdn-agent {self.core.host_id} takes migrated connections on tcp {server.listen_address}, "
            f"hands them to {settings.handoff_socket}",
            flush=True,
        )
        return server


class _Udp(asyncio.DatagramProtocol):
    """Hands every datagram to the agent."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.agent.datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("udp error: %s", exc)


def run_agent(config: AgentConfig, key: bytes, drop_next_row_change: bool = False) -> int:
    """Run an agent in a fresh event loop until it is stopped; the exit status."""
    return asyncio.run(Agent(config, key, drop_next_row_change).run())
