"""The real agent process on loopback: heartbeats, snapshots, directives, health flips, CLI, goodbye, and a UDP fuzz.

The test plays the controller on a UDP socket of its own; every wait is bounded and the agent is stopped by PID.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import random
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from nlb_sdn.agent.checks import probe_command, probe_http, probe_tcp, sample_load
from nlb_sdn.agent.cli import control, main as cli_main
from nlb_sdn.agent.config import CommandLoad, ConnectionsLoad, FileLoad
from nlb_sdn.health.protocol import UDP_MAX_SIZE, Verifier
from nlb_sdn.health.table import Row, table_checksum
from nlb_sdn.migration.sender import migrate
from nlb_sdn.migration.tickets import TICKET_TTL, Grant, Ticket, issue
from nlb_sdn.signed import Message, SequenceCounter, encode
from tests.lib.net import free_port
from tests.lib.polling import poll_until
from tests.lib.processes import stop_process

KEY = b"test-deployment-key-0123456789"
HB_PERIOD = 0.3


class Agent:
    """A running agent subprocess and the fake controller socket it reports to."""

    def __init__(self, directory: Path, extra_args: list[str], extra_config: str = "") -> None:
        self.directory = directory
        (directory / "key").write_bytes(KEY + b"\n")
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.app_port = self.listener.getsockname()[1]
        self.closed_port = free_port()
        self.ctl = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.ctl.bind(("127.0.0.1", 0))
        self.control_socket = str(directory / "agent.sock")
        self.config = directory / "agent.yaml"
        self.config.write_text(f"""
host_id: h1
key_file: {directory / "key"}
controllers: ["127.0.0.1:{self.ctl.getsockname()[1]}"]
listen: 127.0.0.1:0
hb_period: {HB_PERIOD}
control_socket: {self.control_socket}
{extra_config}
apps:
  - vip: 10.0.0.100
    vport: 80
    pip: 127.0.0.1
    pport: {self.app_port}
    capacity: 100
    health: {{type: tcp, interval: 0.2, timeout: 0.2, rise: 1, fall: 1}}
  - vip: 10.0.0.100
    vport: 80
    pip: 127.0.0.1
    pport: {self.closed_port}
    capacity: 10
    health: {{type: tcp, interval: 0.5, timeout: 0.2, rise: 1, fall: 1}}
    load: {{type: static, value: 2}}
""")
        self.app_id = f"10.0.0.100:80/tcp/127.0.0.1:{self.app_port}"
        self.static_app_id = f"10.0.0.100:80/tcp/127.0.0.1:{self.closed_port}"
        self.verifier = Verifier(KEY, UDP_MAX_SIZE)
        self.seq = SequenceCounter()
        with open(directory / "agent.log", "wb") as stderr:  # the agent keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "nlb_sdn.agent.cli", "run", "--config", str(self.config), *extra_args],
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 15.0)
        line = self.proc.stdout.readline() if ready else ""
        if "listening on udp" not in line:
            self.stop()
            pytest.fail(f"agent did not start: {line!r} {self.log()}")
        self.port = int(line.split("listening on udp ")[1].split(",")[0].rsplit(":", 1)[1])

    def log(self) -> str:
        return (self.directory / "agent.log").read_text()

    def send(self, type: str, body: dict[str, Any]) -> None:
        """Send a signed message as controller ``lbu:1``, under the agent's key (``h1``)."""
        data = encode(KEY, type, "lbu:1", self.seq.next(), time.time(), body, kid="h1")
        self.ctl.sendto(data, ("127.0.0.1", self.port))

    def receive(self, type: str, where: Callable[[Message], bool] = lambda m: True, timeout: float = 3.0) -> Message:
        """The next verified message of ``type`` satisfying ``where``, within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.ctl.settimeout(left)
            try:
                data, _ = self.ctl.recvfrom(65536)
            except TimeoutError:
                break
            message = self.verifier.verify(data, time.time())
            assert message is not None, f"agent sent an invalid datagram: {self.verifier.dropped}"
            assert message.src == "h1"
            if message.type == type and where(message):
                return message
        pytest.fail(f"no {type} within {timeout} s; log:\n{self.log()}")

    def table(self) -> dict[str, Any]:
        return control(self.control_socket, {"cmd": "table"})

    def cli(self, *args: str) -> int:
        """Run an ``nlb-sdn-agent`` control subcommand against this agent's control socket."""
        return cli_main([*args, "--socket", self.control_socket])

    def stop(self) -> None:
        """Stop the agent this test started, by PID, and close the sockets."""
        stop_process(self.proc)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        self.listener.close()
        self.ctl.close()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short temporary directory (Unix socket paths are limited to about 100 bytes)."""
    with tempfile.TemporaryDirectory(prefix="nlba-") as name:
        yield Path(name)


@pytest.fixture
def agent(short_dir: Path) -> Iterator[Agent]:
    running = Agent(short_dir, [])
    yield running
    running.stop()


def test_heartbeat_snapshot_and_set_target(agent: Agent):
    postulate = agent.receive("postulate")
    assert postulate.body["from"] == postulate.body["host_id"] == "h1"
    beat = agent.receive("heartbeat")
    assert beat.body["host_id"] == "h1" and beat.body["row_count"] == 2
    assert beat.body["period_ms"] == round(HB_PERIOD * 1000)
    agent.send("get_snapshot", {"lbu_id": 1, "host_id": "h1", "reason": "test"})
    snap = agent.receive("snapshot")
    rows = [Row.from_dict(row) for row in snap.body["rows"]]
    assert {row.app_id for row in rows} == {agent.app_id, agent.static_app_id}
    assert snap.body["checksum"] == table_checksum(rows)
    agent.send("set_target_state", {"lbu_id": 1, "app_id": agent.app_id, "target": "draining"})
    change = agent.receive("row_change", lambda m: m.body["row"]["target"] == "draining")
    assert change.body["app_id"] == agent.app_id and change.body["op"] == "update"
    assert next(r for r in agent.table()["rows"] if r["app_id"] == agent.app_id)["target"] == "draining"
    later = agent.receive("heartbeat", lambda m: m.body["checksum"] == agent.table()["checksum"])
    assert later.body["row_count"] == 2


def test_health_flips_to_failed_when_the_port_stops_listening(agent: Agent):
    agent.receive("row_change", lambda m: m.body["app_id"] == agent.app_id and m.body["row"]["health"] == "ok")
    agent.listener.close()
    agent.receive("row_change", lambda m: m.body["app_id"] == agent.app_id and m.body["row"]["health"] == "failed")
    other = next(r for r in agent.table()["rows"] if r["app_id"] == agent.static_app_id)
    assert other["health"] == "failed"


def test_sigterm_sends_goodbye_three_times_and_exits_0(agent: Agent):
    agent.receive("heartbeat")
    agent.proc.send_signal(signal.SIGTERM)
    for _ in range(3):
        assert agent.receive("goodbye").body == {"host_id": "h1", "reason": "SIGTERM"}
    assert agent.proc.wait(5) == 0
    assert not os.path.exists(agent.control_socket)


def test_cli_table_set_target_and_set_load(agent: Agent, capsys):
    agent.receive("row_change", lambda m: m.body["app_id"] == agent.app_id and m.body["row"]["health"] == "ok")
    assert cli_main(["table", "--socket", agent.control_socket]) == 0
    out = capsys.readouterr().out
    assert "HEALTH" in out and "CURRENT" in out and f"127.0.0.1:{agent.app_port}" in out
    assert cli_main(["table", "--config", str(agent.config), "--json"]) == 0
    assert '"checksum"' in capsys.readouterr().out
    assert cli_main(["set-target", agent.app_id, "inactive", "--socket", agent.control_socket]) == 0
    agent.receive("row_change", lambda m: m.body["row"]["target"] == "inactive")
    assert cli_main(["set-load", agent.static_app_id, "7.5", "--socket", agent.control_socket]) == 0
    agent.receive("row_change", lambda m: m.body["row"]["load"] == 7.5)
    assert cli_main(["set-load", agent.app_id, "3", "--socket", agent.control_socket]) == 1
    assert "not static" in capsys.readouterr().err
    assert cli_main(["set-target", "nope", "active", "--socket", agent.control_socket]) == 1
    assert control(agent.control_socket, {"cmd": "reboot"}) == {"ok": False, "error": "unknown command 'reboot'"}
    assert cli_main(["table", "--socket", str(agent.directory / "absent.sock")]) == 1


CLIENT = "192.0.2.7"


def test_cli_session_up_sends_a_verified_session_up_and_down_a_session_down(agent: Agent, capsys):
    agent.receive("postulate")
    assert agent.cli("session-up", agent.app_id, "--sid", "S1", "--client", CLIENT, "--ttl", "600") == 0
    assert f"session app S1 of client {CLIENT} on {agent.app_id}: up for 600 s" in capsys.readouterr().out
    up = agent.receive("session_up", lambda m: m.body["sid"] == "S1")
    assert up.body == {
        "host_id": "h1",
        "stype": "app",
        "sid": "S1",
        "vip": "10.0.0.100",
        "vport": 80,
        "proto": "tcp",
        "pip": "127.0.0.1",
        "pport": agent.app_port,
        "client": CLIENT,
        "ttl_s": 600.0,
    }
    assert (
        agent.cli("session-up", agent.static_app_id, "--sid", "c-2", "--client", "192.0.2.8", "--stype", "http_cookie")
        == 0
    )
    assert agent.receive("session_up", lambda m: m.body["sid"] == "c-2").body["ttl_s"] == 600.0
    capsys.readouterr()
    assert cli_main(["sessions", "--config", str(agent.config), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(s["sid"], s["stype"], s["app_id"]) for s in listed["sessions"]] == [
        ("S1", "app", agent.app_id),
        ("c-2", "http_cookie", agent.static_app_id),
    ]
    assert 590 < listed["sessions"][0]["expires_in"] <= 600
    assert agent.cli("sessions") == 0
    assert "host h1  sessions 2" in capsys.readouterr().out
    agent.send("get_snapshot", {"lbu_id": 1, "host_id": "h1", "reason": "controller restarted"})
    agent.receive("snapshot")
    again = agent.receive("session_up", lambda m: m.body["sid"] == "S1")
    assert again.body["client"] == CLIENT and 590 < again.body["ttl_s"] < 600
    assert cli_main(["session-down", agent.app_id, "--sid", "S1", "--config", str(agent.config)]) == 0
    assert f"session app S1 of client {CLIENT} on {agent.app_id}: down" in capsys.readouterr().out
    down = agent.receive("session_down")
    assert down.body == {
        "host_id": "h1",
        "stype": "app",
        "sid": "S1",
        "vip": "10.0.0.100",
        "vport": 80,
        "client": CLIENT,
    }
    assert [s["sid"] for s in control(agent.control_socket, {"cmd": "sessions"})["sessions"]] == ["c-2"]


def test_session_commands_refuse_bad_requests(agent: Agent, capsys):
    assert agent.cli("session-down", agent.app_id, "--sid", "S1") == 1
    assert "no session 'S1'" in capsys.readouterr().err
    assert agent.cli("session-up", "nope", "--sid", "S1", "--client", CLIENT) == 1
    assert "no app 'nope'" in capsys.readouterr().err
    assert agent.cli("session-up", agent.app_id, "--sid", "S1", "--client", "client-1") == 1
    assert "client must be an IPv4 address" in capsys.readouterr().err
    assert agent.cli("session-up", agent.app_id, "--sid", "S1", "--client", CLIENT, "--stype", "Cookie") == 1
    assert "stype must be" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        agent.cli("session-up", agent.app_id, "--sid", "S1", "--client", CLIENT, "--ttl", "0")
    for request, error in [
        ({"sid": 5}, "sid must be a string"),
        ({"ttl_s": "600"}, "ttl must be"),
        ({"client": None}, "client must be"),
        ({"sid": "x" * 300}, "sid must be"),
    ]:
        reply = control(
            agent.control_socket,
            {"cmd": "session-up", "app_id": agent.app_id, "sid": "S1", "client": CLIENT, **request},
        )
        assert reply["ok"] is False and error in reply["error"], reply
    assert agent.cli("session-up", agent.app_id, "--sid", "S1", "--client", CLIENT) == 0
    assert agent.cli("session-down", agent.static_app_id, "--sid", "S1") == 1
    assert "belongs to" in capsys.readouterr().err
    assert control(agent.control_socket, {"cmd": "sessions"})["sessions"][0]["sid"] == "S1"


def test_a_session_is_refreshed_at_half_its_ttl_then_expires_with_a_session_down(agent: Agent):
    agent.receive("postulate")
    started = time.monotonic()
    assert agent.cli("session-up", agent.app_id, "--sid", "short", "--client", CLIENT, "--ttl", "1.2") == 0
    assert agent.receive("session_up").body["ttl_s"] == 1.2
    refresh = agent.receive("session_up")
    assert time.monotonic() - started >= 0.55 and 0.3 < refresh.body["ttl_s"] <= 0.6
    down = agent.receive("session_down")
    assert time.monotonic() - started >= 1.15
    assert down.body["sid"] == "short" and down.body["client"] == CLIENT
    assert control(agent.control_socket, {"cmd": "sessions"})["sessions"] == []


def test_a_second_agent_does_not_steal_the_control_socket(agent: Agent):
    proc = subprocess.run(
        [sys.executable, "-m", "nlb_sdn.agent.cli", "run", "--config", str(agent.config)],
        capture_output=True,
        text=True,
        timeout=15,
    )
    assert proc.returncode == 1 and "in use by a running agent" in proc.stderr
    assert agent.table()["ok"]


def test_dropped_row_change_is_caught_by_the_heartbeat_checksum(short_dir: Path):
    hooked = Agent(short_dir, ["--drop-next-row-change"])
    try:
        initial = hooked.receive("postulate").body["checksum"]
        first = hooked.receive("row_change")
        assert first.body["prev_checksum"] != initial
        hooked.send("get_snapshot", {"lbu_id": 1, "host_id": "h1", "reason": "checksum mismatch"})
        snap = hooked.receive("snapshot")
        assert snap.body["checksum"] == table_checksum(Row.from_dict(row) for row in snap.body["rows"])
        assert "test hook: not sending row_change" in hooked.log()
    finally:
        hooked.stop()


def malformed_datagrams(rng: random.Random, valid: bytes, count: int) -> Iterator[bytes]:
    """``count`` datagrams the agent must drop: noise, truncations, bit flips and well-signed garbage."""
    for _ in range(count):
        kind = rng.randrange(5)
        if kind == 0:
            yield bytes(rng.randrange(256) for _ in range(rng.randrange(0, 2000)))
        elif kind == 1:
            yield valid[: rng.randrange(len(valid))]
        elif kind == 2:
            flipped = bytearray(valid)
            flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
            yield bytes(flipped)
        else:
            payload = (
                bytes(rng.randrange(256) for _ in range(rng.randrange(300)))
                if kind == 3
                else msgpack.packb(
                    {
                        "v": 1,
                        "kid": "h1",
                        "type": "get_snapshot",
                        "src": "lbu:1",
                        "seq": rng.randrange(2**40),
                        "ts": time.time(),
                        "body": {"host_id": "h1"},
                    }
                )
            )
            yield hmac.new(KEY, payload, hashlib.sha256).digest() + payload


def test_two_thousand_malformed_datagrams_leave_the_agent_answering(agent: Agent):
    agent.receive("heartbeat")
    rng = random.Random(20261126)
    valid = encode(
        KEY,
        "get_snapshot",
        "lbu:1",
        agent.seq.next(),
        time.time(),
        {"lbu_id": 1, "host_id": "h1", "reason": "template"},
        kid="h1",
    )
    sent = 0
    batch: list[bytes] = []
    for data in malformed_datagrams(rng, valid, 2000):
        batch.append(data)
        if len(batch) == 100:
            for datagram in batch:
                agent.ctl.sendto(datagram, ("127.0.0.1", agent.port))
            sent += len(batch)
            batch = []
            poll_until(lambda sent=sent: sum(agent.table()["dropped"].values()) >= sent)
    dropped = agent.table()["dropped"]
    assert sum(dropped.values()) == 2000, dropped
    assert {"bad_mac", "malformed", "oversized"} <= set(dropped)
    assert agent.proc.poll() is None
    agent.send("get_snapshot", {"lbu_id": 1, "host_id": "h1", "reason": "after fuzz"})
    assert len(agent.receive("snapshot").body["rows"]) == 2


# --- probes and load sources against real local endpoints --------------------------------------------------------


async def _serve(response: bytes) -> tuple[asyncio.AbstractServer, int]:
    """An HTTP-ish server on loopback that answers every connection with ``response``."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(response)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def test_tcp_and_http_probes():
    async def scenario() -> None:
        server, port = await _serve(b"HTTP/1.0 200 OK\r\n\r\nh1 ready\n")
        silent = socket.create_server(("127.0.0.1", 0))
        try:
            assert await probe_tcp("127.0.0.1", port, 1.0)
            assert not await probe_tcp("127.0.0.1", free_port(), 1.0)
            assert await probe_http("127.0.0.1", port, "/", 200, "ready", 1.0)
            assert not await probe_http("127.0.0.1", port, "/", 200, "h2", 1.0)
            assert not await probe_http("127.0.0.1", port, "/", 204, "", 1.0)
            assert not await probe_http("127.0.0.1", free_port(), "/", 200, "", 1.0)
            started = time.monotonic()
            assert not await probe_http("127.0.0.1", silent.getsockname()[1], "/", 200, "", 0.3)
            assert time.monotonic() - started < 1.0
        finally:
            server.close()
            silent.close()

    asyncio.run(scenario())


def test_command_probe_and_load_sources(tmp_path: Path):
    async def scenario() -> None:
        assert await probe_command(["true"], 1.0)
        assert not await probe_command(["false"], 1.0)
        assert not await probe_command([str(tmp_path / "absent")], 1.0)
        started = time.monotonic()
        assert not await probe_command(["sleep", "5"], 0.2)
        assert time.monotonic() - started < 1.0
        assert await sample_load(CommandLoad(type="command", argv=["echo", "12"]), 80) == 12.0
        assert await sample_load(CommandLoad(type="command", argv=["echo", "many"]), 80) is None
        assert await sample_load(CommandLoad(type="command", argv=["sh", "-c", "echo 1; exit 3"]), 80) is None
        (tmp_path / "load").write_text("4.5\n")
        assert await sample_load(FileLoad(type="file", path=str(tmp_path / "load")), 80) == 4.5
        assert await sample_load(FileLoad(type="file", path=str(tmp_path / "absent")), 80) is None

    asyncio.run(scenario())


def test_connections_load_counts_established_connections_to_the_port():
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    accepted = [listener.accept()[0] for _ in clients]
    try:
        assert asyncio.run(sample_load(ConnectionsLoad(), port)) == 3.0
        clients[0].close()
        accepted[0].close()
        assert asyncio.run(sample_load(ConnectionsLoad(), port)) == 2.0
    finally:
        for sock in clients + accepted + [listener]:
            sock.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="TCP_REPAIR needs root")
def granting(sock: socket.socket, key: bytes, host: str) -> Callable[[str], Grant]:
    """The controller's tickets for migrating the router's ``sock`` to ``host`` (whose key is ``key``)."""
    (vip, vport), (client, cport) = sock.getsockname()[:2], sock.getpeername()[:2]

    def ticket(migration_id: str) -> Grant:
        now = time.time()
        granted = Ticket(migration_id, host, vip, vport, client, cport, now + TICKET_TTL, os.urandom(16).hex())
        return issue(key, granted, "lbu:1", 1, now)

    return ticket


def test_the_agent_takes_migrations_on_its_migration_port(short_dir: Path):
    """With a ``migration`` section the agent listens for connection state and answers a router (here: no app)."""
    port = free_port()
    agent = Agent(short_dir, [], f"migration: {{listen: '127.0.0.1:{port}', handoff_socket: {short_dir / 'app.sock'}}}")
    try:
        assert agent.proc.stdout is not None
        ready, _, _ = select.select([agent.proc.stdout], [], [], 30.0)  # a bound, generous for a loaded machine
        line = agent.proc.stdout.readline() if ready else ""
        assert f"takes migrated connections on tcp 127.0.0.1:{port}" in line, line
        with socket.create_server(("127.0.0.1", 0)) as listener:
            client = socket.create_connection(listener.getsockname(), timeout=5)
            router, _ = listener.accept()
            with client, router:
                client.sendall(b"GET / HTTP/1.1\r\nHost: vip\r\n\r\n")
                result = migrate(router, ("127.0.0.1", port), granting(router, KEY, "h1"), timeout=2.0)
                assert (result.migrated, result.reason) == (False, "refused"), result
                assert "application unreachable" in result.detail
                refused = migrate(router, ("127.0.0.1", port), granting(router, b"x" * 32, "h2"), timeout=2.0)
                assert (refused.migrated, refused.reason) == (False, "connection_lost"), refused
                expected = {"outcomes": {"no_application": 1, "refused": 1}, "refused_tickets": {"unknown_kid": 1}}
                assert poll_until(lambda: agent.table()["migrations"] == expected), agent.table()["migrations"]
                router.sendall(b"still here")
                assert client.recv(10) == b"still here"
    finally:
        agent.stop()
