"""Connection migration: the wire format (no root), TCP_REPAIR dump/restore over loopback and across network
namespaces, the sender/receiver protocol with its failure paths, and the lab backend's hand-off socket (root)."""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import os
import re
import select
import shutil
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from nlb_sdn.lab.backend import pattern_sha256
from nlb_sdn.migration import handoff, receiver as receiver_module, sender
from nlb_sdn.migration.receiver import MigrationServer, Receiver
from nlb_sdn.migration.sender import migrate
from nlb_sdn.migration.tcprepair import (
    ConnectionState,
    RepairWindow,
    drop_silently,
    dump,
    in_repair,
    restore,
    resume,
)
from nlb_sdn.migration.tickets import TICKET_TTL, Grant, Ticket, issue
from nlb_sdn.migration.wire import GO, MIGRATE, REPLY, Channel, MigrationVerifier, WireError
from nlb_sdn.signed import MAC_SIZE, SequenceCounter, encode, frame
from tests.lib.net import free_port, loopback_connection
from tests.lib.polling import poll_until
from tests.lib.processes import stop_process

KEY = b"migration-test-key-0123456789abc"
"""The agent's host key (its host id is the receiver's default, ``agent``)."""
OTHER_KEY = b"another-key-of-32-bytes-00000000"
_TICKETS = SequenceCounter()
REQUEST = b"GET /bytes/1000000 HTTP/1.1\r\nHost: vip\r\nConnection: close\r\n\r\n"
SIZE = 1_000_000


def _repair_available() -> bool:
    """Root with TCP_REPAIR in the kernel (CONFIG_CHECKPOINT_RESTORE)."""
    if os.geteuid() != 0:
        return False
    with socket.socket() as sock:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, 19, 1)
        except OSError:
            return False
    return True


needs_repair = pytest.mark.skipif(not _repair_available(), reason="needs root and TCP_REPAIR")
needs_netns = pytest.mark.skipif(not (shutil.which("ip") and shutil.which("tcpdump")), reason="needs ip and tcpdump")


def _state(**changes: object) -> ConnectionState:
    """A plausible connection state."""
    state = ConnectionState(
        local_ip="10.0.0.100",
        local_port=80,
        remote_ip="10.0.0.1",
        remote_port=40000,
        snd_seq=4_000_000_000,
        rcv_seq=17,
        send_queue=b"",
        recv_queue=REQUEST,
        mss=1460,
        wscale_ok=True,
        snd_wscale=7,
        rcv_wscale=9,
        sack_ok=True,
        timestamp=123456,
        window=RepairWindow(1, 2, 3, 4, 5),
    )
    return replace(state, **changes)


def grant(
    local: tuple[str, int], remote: tuple[str, int], migration_id: str, key: bytes = KEY, host: str = "agent"
) -> Grant:
    """The controller's ticket for moving ``remote`` → ``local`` to ``host`` (signed with ``key``)."""
    now = time.time()
    ticket = Ticket(migration_id, host, *local, *remote, now + TICKET_TTL, os.urandom(16).hex())
    return issue(key, ticket, "lbu:1", _TICKETS.next(), now)


def granting(sock: socket.socket, key: bytes = KEY, channel_key: bytes | None = None) -> Callable[[str], Grant]:
    """A ticket source for migrating the router's ``sock`` (its local address is the VIP's, its peer the client);
    ``channel_key`` replaces the key the grant carries (a router with the wrong key)."""
    local, remote = sock.getsockname()[:2], sock.getpeername()[:2]

    def ticket(migration_id: str) -> Grant:
        granted = grant(local, remote, migration_id, key)
        return granted if channel_key is None else replace(granted, channel_key=channel_key)

    return ticket


# -- wire format (no root) ---------------------------------------------------------------------------------------


def test_state_round_trips_through_the_signed_wire_format():
    state = _state()
    data = state.to_wire(KEY, "r1", 7, 1000.0, "m-1")
    assert ConnectionState.from_wire(data, MigrationVerifier(KEY), 1000.5) == ("m-1", state)
    no_options = _state(
        timestamp=None, wscale_ok=False, snd_wscale=0, rcv_wscale=0, sack_ok=False, send_queue=b"\x00unacked"
    )
    data = no_options.to_wire(KEY, "r1", 8, 1000.0, "m-2")
    assert ConnectionState.from_wire(data, MigrationVerifier(KEY), 1000.0) == ("m-2", no_options)


def test_the_wire_format_is_the_hl_envelope():
    data = _state().to_wire(KEY, "r1", 7, 1000.0, "m-1")
    assert data == encode(KEY, MIGRATE, "r1", 7, 1000.0, {"id": "m-1", "state": _state().to_dict()}, kid="m-1")


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda data: data[:10] + bytes([data[10] ^ 1]) + data[11:], "bad_mac"),
        (lambda data: data[:-1] + bytes([data[-1] ^ 1]), "bad_mac"),
        (lambda data: data[:MAC_SIZE], "bad_mac"),
        (lambda data: b"", "bad_mac"),
        (lambda data: data + bytes(70_000), "oversized"),
    ],
)
def test_tampered_messages_are_rejected(mutate, reason):
    data = _state().to_wire(KEY, "r1", 7, 1000.0, "m-1")
    with pytest.raises(WireError) as caught:
        ConnectionState.from_wire(mutate(data), MigrationVerifier(KEY), 1000.0)
    assert caught.value.reason == reason


def test_wrong_key_stale_replayed_and_foreign_messages_are_rejected():
    data = _state().to_wire(KEY, "r1", 7, 1000.0, "m-1")
    for verifier, now, reason in (
        (MigrationVerifier(b"another-key-of-32-bytes-00000000"), 1000.0, "bad_mac"),
        (MigrationVerifier(KEY), 1100.0, "stale"),
    ):
        with pytest.raises(WireError) as caught:
            ConnectionState.from_wire(data, verifier, now)
        assert caught.value.reason == reason
    verifier = MigrationVerifier(KEY)
    ConnectionState.from_wire(data, verifier, 1000.0)
    with pytest.raises(WireError, match="replayed"):
        ConnectionState.from_wire(data, verifier, 1000.0)
    heartbeat = encode(
        KEY, "heartbeat", "h1", 1, 1000.0, {"host_id": "h1", "checksum": 0, "row_count": 0, "period_ms": 1000}
    )
    go = encode(KEY, GO, "r1", 9, 1000.0, {"id": "m-1"})
    unknown = encode(KEY, "migrate_maybe", "r1", 10, 1000.0, {"id": "m-1"})
    for message, reason in ((heartbeat, "unknown_type"), (go, "unexpected"), (unknown, "unknown_type")):
        with pytest.raises(WireError) as caught:
            ConnectionState.from_wire(message, MigrationVerifier(KEY), 1000.0)
        assert caught.value.reason == reason


@pytest.mark.parametrize(
    "changes",
    [
        {"local_ip": "10.0.0.256"},
        {"local_ip": "::1"},
        {"remote_port": 0},
        {"local_port": 65536},
        {"snd_seq": -1},
        {"rcv_seq": 2**32},
        {"rcv_seq": True},
        {"recv_queue": "text"},
        {"mss": 0},
        {"snd_wscale": 15},
        {"sack_ok": 1},
        {"timestamp": -5},
    ],
)
def test_state_fields_are_type_and_range_checked(changes):
    data = {**_state().to_dict(), **changes}
    with pytest.raises(WireError, match="bad_state"):
        ConnectionState.from_dict(data)


def test_state_shape_is_checked():
    good = _state().to_dict()
    for bad in (
        [],
        {**good, "extra": 1},
        {k: v for k, v in good.items() if k != "mss"},
        {**good, "window": {**good["window"], "rcv_wnd": -1}},
        {**good, "window": [1, 2, 3, 4, 5]},
    ):
        with pytest.raises(WireError, match="bad_state"):
            ConnectionState.from_dict(bad)
    body = {"id": "m-1", "state": "not a map"}
    with pytest.raises(WireError, match="malformed"):
        ConnectionState.from_wire(encode(KEY, MIGRATE, "r1", 1, 1000.0, body), MigrationVerifier(KEY), 1000.0)


def test_states_over_64_kib_are_refused_before_sending():
    with pytest.raises(WireError, match="oversized"):
        _state(recv_queue=bytes(70_000)).to_wire(KEY, "r1", 1, 1000.0, "m-1")


def _talk_to_receiver(
    receiver: Receiver, messages: list[bytes], granted: Grant | None = None
) -> tuple[str, list[dict[str, Any]]]:
    """Send ``messages`` (then end the stream); the outcome and the replies, verified with the grant's channel key."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.sendall(b"".join(frame(message) for message in messages))
        ours.shutdown(socket.SHUT_WR)
        outcome = receiver.serve_connection(theirs)
        theirs.shutdown(socket.SHUT_WR)
        channel = Channel(ours, KEY, "r1", SequenceCounter())
        if granted is not None:
            channel.rekey(granted.migration_id, granted.channel_key)
        replies = []
        with contextlib.suppress(ConnectionError):
            while True:
                replies.append(channel.receive(time.monotonic() + 2, REPLY).body)
    return outcome, replies


LOCAL, REMOTE = ("10.0.0.100", 80), ("10.0.0.1", 40000)
"""The VIP and client addresses of :func:`_state`."""


def test_receiver_answers_bad_state_wrong_key_and_replays_with_an_error(tmp_path):
    receiver = Receiver(KEY, str(tmp_path / "app.sock"))
    first = grant(LOCAL, REMOTE, "m-1")
    wrong_key = _state().to_wire(OTHER_KEY, "r1", 1, time.time(), "m-1")
    assert receiver.serve_connection(socket.socketpair()[0]) == "no_state"
    outcome, replies = _talk_to_receiver(receiver, [first.ticket, wrong_key], first)
    assert outcome == "rejected" and replies[0]["ok"] is False and "bad_mac" in replies[0]["error"]
    second = grant(LOCAL, REMOTE, "m-2")
    bad_state = encode(second.channel_key, MIGRATE, "r1", 2, time.time(), {"id": "m-2", "state": {"mss": 1}}, "m-2")
    outcome, replies = _talk_to_receiver(receiver, [second.ticket, bad_state], second)
    assert outcome == "rejected" and "bad_state" in replies[0]["error"]
    third = grant(LOCAL, REMOTE, "m-3")
    good = _state().to_wire(third.channel_key, "r1", 3, time.time(), "m-3")
    outcome, replies = _talk_to_receiver(receiver, [third.ticket, good], third)
    assert outcome == "no_application" and "application unreachable" in replies[0]["error"]
    outcome, replies = _talk_to_receiver(receiver, [third.ticket, good], third)
    assert outcome == "refused" and replies == [] and receiver.tickets.refused == {"replayed": 1}
    assert receiver.outcomes == {"no_state": 1, "rejected": 2, "no_application": 1, "refused": 1}


class SilentAgent:
    """A stand-in for ``socket.create_connection`` on a fake clock: silent ``silent`` times, then connected."""

    def __init__(self, silent: int) -> None:
        self.silent = silent
        self.now = 0.0
        self.attempts: list[float] = []

    def create_connection(self, _address: tuple[str, int], timeout: float) -> str:
        self.attempts.append(timeout)
        self.now += timeout
        if len(self.attempts) <= self.silent:
            raise TimeoutError("timed out")
        return "connected"


def test_connect_sends_a_fresh_syn_after_each_silent_attempt(monkeypatch):
    agent = SilentAgent(silent=2)
    monkeypatch.setattr(sender.socket, "create_connection", agent.create_connection)
    assert sender.connect(("10.0.0.1", 7001), deadline=1.0, attempt=0.25, clock=lambda: agent.now) == "connected"
    assert agent.attempts == [0.25, 0.25, 0.25]


def test_connect_stops_at_the_deadline(monkeypatch):
    agent = SilentAgent(silent=99)
    monkeypatch.setattr(sender.socket, "create_connection", agent.create_connection)
    with pytest.raises(TimeoutError, match=re.escape("no connection to 10.0.0.1:7001 in time")):
        sender.connect(("10.0.0.1", 7001), deadline=0.6, attempt=0.25, clock=lambda: agent.now)
    assert agent.attempts == [0.25, 0.25, pytest.approx(0.1)]


def test_connect_gives_up_at_once_on_a_refused_port():
    port = free_port()
    with pytest.raises(ConnectionRefusedError):  # a retry would have ended in TimeoutError
        sender.connect(("127.0.0.1", port), deadline=time.monotonic() + 5.0)


def test_handoff_passes_a_descriptor_with_its_header(tmp_path):
    path = str(tmp_path / "app.sock")
    listener = handoff.listen(path)
    results: list[tuple[socket.socket, dict]] = []

    def app() -> None:
        channel, _ = listener.accept()
        with channel:
            results.append(handoff.receive_connection(channel))

    thread = threading.Thread(target=app)
    thread.start()
    left, right = socket.socketpair()
    with listener, left, right, handoff.connect(path, 5) as channel:
        handoff.send_connection(channel, left, {"id": "m-1", "remote": ["10.0.0.1", 4000]})
        thread.join(5)
        passed, header = results[0]
        with passed:
            passed.sendall(b"through the passed descriptor")
            assert right.recv(100) == b"through the passed descriptor"
    assert header == {"id": "m-1", "remote": ["10.0.0.1", 4000]}
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"


# -- helpers for the root tests -----------------------------------------------------------------------------------

_LIBC = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000


def _setns(fd: int) -> None:
    if _LIBC.setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns")


@contextlib.contextmanager
def netns(name: str) -> Iterator[None]:
    """Run the calling thread in network namespace ``name`` for the block (sockets keep the namespace they were
    created in)."""
    with open("/proc/thread-self/ns/net") as home, open(f"/run/netns/{name}") as target:
        _setns(target.fileno())
        try:
            yield
        finally:
            _setns(home.fileno())


def _run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True, timeout=20)


@contextlib.contextmanager
def packet_capture(namespace: str, path: Path) -> Iterator[None]:
    """tcpdump of TCP port 80 on every interface of ``namespace`` into ``path`` for the block."""
    proc = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            namespace,
            "tcpdump",
            "-i",
            "any",
            "--immediate-mode",
            "-U",
            "-w",
            str(path),
            "tcp port 80",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        for _ in range(5):
            if "listening on" in proc.stderr.readline():
                break
        else:
            pytest.fail("tcpdump did not start")
        yield
    finally:
        stop_process(proc)


def _outq(sock: socket.socket) -> int:
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, bytes(4)))[0]


def _inq(sock: socket.socket) -> int:
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, bytes(4)))[0]


def _read_response(sock: socket.socket, timeout: float = 30.0) -> tuple[bytes, int, bytes]:
    """Read one ``Connection: close`` response to the end: (head, body length, body sha256).

    Fails if the stream ends (FIN) or is reset before the whole body arrived.
    """
    sock.settimeout(timeout)
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        assert chunk, f"stream ended before the response head: {buffer!r}"
        buffer += chunk
    head, _, body = buffer.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
    )
    digest = hashlib.sha256(body)
    received = len(body)
    while received < length:
        chunk = sock.recv(65536)
        assert chunk, f"stream ended after {received} of {length} body bytes"
        digest.update(chunk)
        received += len(chunk)
    return head, received, digest.digest()


def _peek_head(conn: socket.socket) -> bytes:
    """Wait for a complete request head in ``conn`` and return it, leaving it queued (MSG_PEEK)."""
    conn.settimeout(5)
    assert poll_until(lambda: b"\r\n\r\n" in conn.recv(16384, socket.MSG_PEEK))
    return conn.recv(16384, socket.MSG_PEEK)


@contextlib.contextmanager
def lab_backend(
    name: str, bind: str, port: int, handoff_path: str, namespace: str | None = None
) -> Iterator[subprocess.Popen[str]]:
    """The lab backend with a hand-off socket, optionally in a network namespace; stopped by PID afterwards."""
    prefix = ["ip", "netns", "exec", namespace] if namespace else []
    proc = subprocess.Popen(
        [
            *prefix,
            sys.executable,
            "-m",
            "nlb_sdn.lab.backend",
            "--name",
            name,
            "--bind",
            bind,
            "--port",
            str(port),
            "--handoff-socket",
            handoff_path,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 15.0)
        lines = [proc.stdout.readline(), proc.stdout.readline()] if ready else []
        assert lines and "taking connections on" in lines[-1], lines
        yield proc
    finally:
        stop_process(proc)


@pytest.fixture
def loopback_pair() -> Iterator[tuple[socket.socket, socket.socket, socket.socket]]:
    """(listener, client, accepted) over 127.0.0.1; the client has sent REQUEST and it is queued at the server."""
    with loopback_connection() as (listener, client, accepted):
        client.sendall(REQUEST)
        _peek_head(accepted)
        yield listener, client, accepted


# -- TCP_REPAIR over loopback (root) -------------------------------------------------------------------------------


@needs_repair
def test_dump_drop_restore_hands_the_connection_to_the_backend_which_serves_it(loopback_pair, tmp_path):
    listener, client, router = loopback_pair
    state = dump(router)
    assert in_repair(router)
    assert state.recv_queue == REQUEST and state.send_queue == b""
    assert (state.local_ip, state.local_port) == listener.getsockname()
    assert (state.remote_ip, state.remote_port) == client.getsockname()
    assert state.mss > 0 and state.sack_ok and state.wscale_ok and state.timestamp is not None
    drop_silently(router)
    path = str(tmp_path / "backend.sock")
    with lab_backend("h2", "127.0.0.1", 0, path):
        restored = restore(state)
        assert not in_repair(restored)
        with restored, handoff.connect(path, 5) as channel:
            handoff.send_connection(channel, restored, {"id": "m-1"})
        head, received, digest = _read_response(client)
    assert head.startswith(b"HTTP/1.1 200 OK") and b"X-Served-By: h2" in head
    assert f"X-Client: 127.0.0.1:{client.getsockname()[1]}".encode() in head
    assert received == SIZE and digest == bytes.fromhex(pattern_sha256(SIZE))
    assert client.recv(1) == b""


@needs_repair
def test_a_frozen_socket_neither_acknowledges_nor_takes_data_and_resume_gets_it_retransmitted(loopback_pair):
    _, client, router = loopback_pair
    state = dump(router)
    client.sendall(b"sent while frozen")
    time.sleep(0.3)
    assert _outq(client) == len(b"sent while frozen")
    assert _inq(router) == len(REQUEST)
    assert state.recv_queue == REQUEST
    resume(router)
    assert poll_until(lambda: _inq(router) == len(REQUEST) + len(b"sent while frozen"))
    assert router.recv(4096) == REQUEST + b"sent while frozen"
    router.sendall(b"answer")
    assert client.recv(100) == b"answer"


@needs_repair
def test_drop_silently_sends_neither_fin_nor_rst(loopback_pair):
    _, client, router = loopback_pair
    drop_silently(router)
    client.settimeout(0.5)
    with pytest.raises(TimeoutError):
        client.recv(1)


@needs_repair
def test_restore_refuses_a_duplicate_connection_and_sends_nothing(loopback_pair):
    _, client, router = loopback_pair
    state = dump(router)
    with pytest.raises(OSError, match="connect"):
        restore(state)
    resume(router)
    router.sendall(b"still here")
    assert client.recv(100) == b"still here"


def _assert_usable(client: socket.socket, router: socket.socket) -> None:
    """The router's socket is live again: it reads what the client sends and the client gets its answer."""
    client.sendall(b"ping")
    assert poll_until(lambda: _inq(router) >= len(REQUEST) + 4)
    assert router.recv(4096) == REQUEST + b"ping"
    router.sendall(b"pong")
    client.settimeout(5)
    assert client.recv(100) == b"pong"


@contextlib.contextmanager
def receiver_server(
    handoff_path: str, key: bytes = KEY, namespace: str | None = None, bind: str = "127.0.0.1", go_timeout: float = 2.0
) -> Iterator[MigrationServer]:
    """A migration receiver on an ephemeral port, served (and restoring) in ``namespace`` when given."""
    context = netns(namespace) if namespace else contextlib.nullcontext()
    with context:
        server = MigrationServer(Receiver(key, handoff_path, go_timeout=go_timeout), (bind, 0))

    def serve() -> None:
        if namespace:
            with open(f"/run/netns/{namespace}") as target:
                _setns(target.fileno())
        server.serve_forever(poll_interval=0.05)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@contextlib.contextmanager
def silent_agent() -> Iterator[tuple[str, int]]:
    """A TCP port that accepts and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        yield listener.getsockname()


@needs_repair
@pytest.mark.parametrize("case", ["wrong_key", "no_application", "restore_error", "unreachable", "timeout"])
def test_failed_migrations_give_the_socket_back_live_and_say_why(loopback_pair, tmp_path, case):
    _, client, router = loopback_pair
    path = str(tmp_path / "app.sock")
    app = handoff.listen(path)
    with app, contextlib.ExitStack() as stack:
        if case == "timeout":
            address = stack.enter_context(silent_agent())
        elif case == "unreachable":
            address = ("127.0.0.1", free_port())
        else:
            server = stack.enter_context(
                receiver_server(str(tmp_path / "nobody.sock") if case == "no_application" else path)
            )
            address = server.server_address
        tickets = granting(router, channel_key=OTHER_KEY if case == "wrong_key" else None)
        start = time.monotonic()
        result = migrate(router, address, tickets, timeout=0.5)
        elapsed = time.monotonic() - start
    expected = {
        "wrong_key": "bad_reply",
        "no_application": "refused",
        "restore_error": "refused",
        "unreachable": "unreachable",
        "timeout": "timeout",
    }[case]
    assert (result.migrated, result.reason) == (False, expected), result
    if case == "restore_error":
        assert "connect" in result.detail  # the router's socket still holds the 4-tuple in this namespace
    if case == "no_application":
        assert "application unreachable" in result.detail
    assert elapsed < 2.0
    assert not in_repair(router)
    _assert_usable(client, router)


@needs_repair
@pytest.mark.parametrize("case", ["other_connection", "other_host"])
def test_a_migration_without_a_valid_ticket_is_refused_and_the_socket_stays_live(loopback_pair, tmp_path, case):
    _, client, router = loopback_pair
    path = str(tmp_path / "app.sock")
    local, remote = router.getsockname()[:2], router.getpeername()[:2]

    def ticket(migration_id: str) -> Grant:
        if case == "other_connection":
            return grant(local, (remote[0], remote[1] % 65535 + 1), migration_id)
        return grant(local, remote, migration_id, key=OTHER_KEY, host="another-host")

    with handoff.listen(path), receiver_server(path) as server:
        result = migrate(router, server.server_address, ticket, timeout=1.0)
        reason, refused = {
            "other_connection": ("refused", {"wrong_connection": 1}),
            "other_host": ("connection_lost", {"unknown_kid": 1}),
        }[case]
        assert (result.migrated, result.reason) == (False, reason), result
        assert poll_until(lambda: server.receiver.outcomes == {"refused": 1})
        assert server.receiver.tickets.refused == refused
    assert not in_repair(router)
    _assert_usable(client, router)


@needs_repair
def test_a_kept_connection_to_the_agent_carries_the_next_migration(loopback_pair, tmp_path):
    _, client, router = loopback_pair
    channels = sender.AgentChannels()
    with receiver_server(str(tmp_path / "nobody.sock")) as server:
        for _ in range(2):
            result = migrate(router, server.server_address, granting(router), timeout=2.0, channels=channels)
            assert (result.migrated, result.reason) == (False, "refused") and "application unreachable" in result.detail
        assert channels.counters == {"connected": 1, "reused": 1}
        assert poll_until(lambda: server.receiver.outcomes == {"no_application": 2})
        channels.close()
    _assert_usable(client, router)


@needs_repair
@pytest.mark.parametrize(
    "seen_closed, counters", [(True, {"connected": 2, "reused": 0}), (False, {"connected": 2, "reused": 1})]
)
def test_a_kept_connection_the_agent_closed_is_replaced_whether_the_close_is_seen_before_use_or_on_it(
    loopback_pair, tmp_path, monkeypatch, seen_closed, counters
):
    _, client, router = loopback_pair
    monkeypatch.setattr(receiver_module, "KEEPALIVE_TIMEOUT", 0.1)
    channels = sender.AgentChannels()
    with receiver_server(str(tmp_path / "nobody.sock")) as server:
        assert (
            migrate(router, server.server_address, granting(router), timeout=2.0, channels=channels).reason == "refused"
        )
        [(kept, _since)] = channels._idle[server.server_address]
        assert poll_until(lambda: not sender._still_open(kept.sock)), "the agent closes an idle connection"
        if not seen_closed:
            monkeypatch.setattr(sender, "_still_open", lambda _sock: True)  # its end arrives only after the check
        result = migrate(router, server.server_address, granting(router), timeout=2.0, channels=channels)
        assert (result.reason, channels.counters) == ("refused", counters), result
        channels.close()
    _assert_usable(client, router)


@needs_repair
def test_a_migration_left_in_doubt_never_leaves_its_connection_for_another(loopback_pair):
    _, client, router = loopback_pair
    channels = sender.AgentChannels()
    with silent_agent() as address:
        result = migrate(router, address, granting(router), timeout=0.3, channels=channels)
    assert (result.migrated, result.reason) == (False, "timeout")
    assert channels._idle.get(address, []) == [] and channels.counters == {"connected": 1, "reused": 0}
    _assert_usable(client, router)


@needs_repair
def test_states_too_large_for_one_message_fall_back(tmp_path):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        with socket.create_connection(listener.getsockname(), timeout=5) as client:
            router, _ = listener.accept()
            with router:
                client.sendall(bytes(100_000))
                assert poll_until(lambda: _inq(router) > 66_000)
                result = migrate(router, ("127.0.0.1", 9), granting(router))
                assert (result.migrated, result.reason) == (False, "too_large")
                assert not in_repair(router)
                router.settimeout(5)
                received = 0
                while received < 100_000:
                    chunk = router.recv(65536)
                    assert chunk
                    received += len(chunk)


# -- across network namespaces (root) -----------------------------------------------------------------------------

VIP = "10.77.0.100"


@pytest.fixture
def three_namespaces() -> Iterator[dict[str, str]]:
    """Client, router and host namespaces: client-router 10.77.1.0/24, client-host 10.77.2.0/24, router-host
    10.77.3.0/24; router and host hold the VIP on lo; the client routes the VIP to the router."""
    tag = f"nlbm{os.getpid() % 100000}"
    names = {"client": f"{tag}c", "router": f"{tag}r", "host": f"{tag}h"}
    try:
        for name in names.values():
            _run("ip", "netns", "add", name)
            _run("ip", "-n", name, "link", "set", "lo", "up")
        links = [
            ("client", "10.77.1.1", "router", "10.77.1.2"),
            ("client", "10.77.2.1", "host", "10.77.2.2"),
            ("router", "10.77.3.1", "host", "10.77.3.2"),
        ]
        for index, (a, a_ip, b, b_ip) in enumerate(links):
            a_dev, b_dev = f"{tag}{index}a", f"{tag}{index}b"
            _run("ip", "link", "add", a_dev, "netns", names[a], "type", "veth", "peer", b_dev, "netns", names[b])
            for ns, dev, ip in ((names[a], a_dev, a_ip), (names[b], b_dev, b_ip)):
                _run("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
                _run("ip", "-n", ns, "link", "set", dev, "up")
        for side in ("router", "host"):
            _run("ip", "-n", names[side], "addr", "add", f"{VIP}/32", "dev", "lo")
        _run("ip", "-n", names["client"], "route", "add", f"{VIP}/32", "via", "10.77.1.2")
        _run("ip", "-n", names["host"], "route", "add", "10.77.1.1/32", "via", "10.77.2.1")
        for sysctl in ("net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"):
            _run("ip", "netns", "exec", names["client"], "sysctl", "-qw", sysctl)
        yield names
    finally:
        for name in names.values():
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=20)


@contextlib.contextmanager
def connected_at_router(names: dict[str, str]) -> Iterator[tuple[socket.socket, socket.socket]]:
    """(client, router): a client connection to VIP:80 accepted in the router's namespace, its REQUEST queued there."""
    with netns(names["router"]):
        listener = socket.socket()
        listener.bind((VIP, 80))
        listener.listen(8)
    with netns(names["client"]):
        client = socket.socket()
    with listener, client:
        client.settimeout(5)
        client.connect((VIP, 80))
        router, _ = listener.accept()
        with router:
            client.sendall(REQUEST)
            _peek_head(router)
            yield client, router


@needs_repair
@needs_netns
def test_migration_across_namespaces_continues_the_connection_at_the_host(three_namespaces, tmp_path):
    names = three_namespaces
    path = str(tmp_path / "h2.sock")
    capture = tmp_path / "client.pcap"
    with contextlib.ExitStack() as stack:
        stack.enter_context(lab_backend("h2", VIP, 80, path, names["host"]))
        server = stack.enter_context(receiver_server(path, namespace=names["host"], bind="10.77.3.2"))
        stack.enter_context(packet_capture(names["client"], capture))
        with connected_at_router(names) as (client, router):
            client_address = client.getsockname()
            committed = []

            def commit() -> None:
                """The forwarder's switch to the host: the client's route to the VIP now leads there."""
                _run("ip", "-n", names["client"], "route", "replace", f"{VIP}/32", "via", "10.77.2.2")
                committed.append(True)

            with netns(names["router"]):
                result = migrate(router, server.server_address, granting(router), timeout=2.0, src="r1", commit=commit)
            assert result.migrated and result.delivered, result
            assert committed and router.fileno() == -1
            head, received, digest = _read_response(client)
            assert client.recv(1) == b""
    assert b"X-Served-By: h2" in head
    assert f"X-Client: {client_address[0]}:{client_address[1]}".encode() in head
    assert received == SIZE and digest == bytes.fromhex(pattern_sha256(SIZE))
    assert server.receiver.outcomes == {"handed_off": 1}
    flags = subprocess.run(
        ["tcpdump", "-nr", str(capture), "tcp[tcpflags] & (tcp-syn|tcp-rst) != 0"],
        capture_output=True,
        text=True,
        timeout=20,
    ).stdout.splitlines()
    assert len(flags) == 2, flags  # one handshake (SYN, SYN-ACK), no RST, ever
    assert all("[R" not in line for line in flags)


@needs_repair
@needs_netns
def test_a_failed_commit_aborts_and_the_host_discards_its_copy(three_namespaces, tmp_path):
    names = three_namespaces
    path = str(tmp_path / "h2.sock")
    app = handoff.listen(path)
    with (
        app,
        receiver_server(path, namespace=names["host"], bind="10.77.3.2") as server,
        connected_at_router(names) as (client, router),
    ):

        def commit() -> None:
            raise RuntimeError("forwarder master unreachable")

        with netns(names["router"]):
            result = migrate(router, server.server_address, granting(router), timeout=2.0, commit=commit)
        assert (result.migrated, result.reason) == (False, "commit_failed")
        assert poll_until(lambda: server.receiver.outcomes["aborted"] == 1)
        _assert_usable(client, router)
