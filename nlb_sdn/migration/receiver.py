"""The host half of a migration (FIG. 33, 3310-3312): receive the state, restore the connection, hand it over.

Per migration: read the controller's ticket and check it with this host's key (for this host, unexpired, unused:
:mod:`nlb_sdn.migration.tickets`), then one ``migrate`` message signed with the channel key the ticket grants, whose
connection must be the one the ticket names; check that the application's hand-off socket answers, restore
the connection in repair mode and reply ``ok`` (or an error, so that the router tries elsewhere); then wait for
``migrate_go`` (leave repair mode, pass the descriptor to the application, reply again) or ``migrate_abort``, end of
stream or timeout (close the restored socket without a packet to the client). A migration that ended cleanly leaves
the connection open for the router's next one (up to ``KEEPALIVE_TIMEOUT`` idle), which saves a TCP handshake each.
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import socketserver
import struct
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable

from nlb_sdn import add_version_option
from nlb_sdn.migration import handoff
from nlb_sdn.migration.tcprepair import ConnectionState, RepairError, drop_silently, restore, resume
from nlb_sdn.migration.tickets import TicketChecker, channel_key
from nlb_sdn.migration.wire import ABORT, GO, MIGRATION_PORT, REPLY, Channel, WireError
from nlb_sdn.signed import SequenceCounter, load_key

LOG = logging.getLogger(__name__)
IO_TIMEOUT = 5.0
GO_TIMEOUT = 5.0
"""How long a restored connection waits for ``migrate_go``; longer than the router's ack timeout plus its commit."""
KEEPALIVE_TIMEOUT = 60.0
"""How long a migration connection waits idle for the router's next migration before it is closed."""
REUSABLE_OUTCOMES = frozenset({"handed_off", "aborted", "no_application", "restore_failed", "handoff_failed"})
"""Outcomes after which both ends agree where the conversation stands, so the connection can carry the next one."""
_LINGER_RESET = struct.Struct("ii").pack(1, 0)


class Receiver:
    """Serves migration connections one at a time each (thread-safe); counts every outcome in ``outcomes``."""

    def __init__(
        self,
        key: bytes,
        handoff_path: str,
        src: str = "agent",
        io_timeout: float = IO_TIMEOUT,
        go_timeout: float = GO_TIMEOUT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """A receiver for host ``src`` that checks tickets with its host ``key`` and hands connections to the
        application at ``handoff_path``."""
        self.key = key
        self.tickets = TicketChecker(src, key)
        self.handoff_path = handoff_path
        self.src = src
        self.io_timeout = io_timeout
        self.go_timeout = go_timeout
        self.clock = clock
        self.sequence = SequenceCounter()
        self.outcomes: Counter[str] = Counter()
        self._lock = threading.Lock()

    def serve_connection(self, conn: socket.socket) -> str:
        """Run migrations over the connected ``conn`` until it ends; count each, return the last one's outcome."""
        channel = Channel(conn, self.key, self.src, self.sequence, self.clock)
        outcome = self._count(self._serve(channel, self.io_timeout))
        while outcome in REUSABLE_OUTCOMES:
            following = self._serve(channel, KEEPALIVE_TIMEOUT)
            if following == "no_state":  # the router closed it, or let it idle: not a migration
                break
            outcome = self._count(following)
        return outcome

    def _count(self, outcome: str) -> str:
        """Count one migration's outcome."""
        with self._lock:
            self.outcomes[outcome] += 1
        return outcome

    @staticmethod
    def _reply(channel: Channel, migration_id: str, stage: str, error: str = "") -> None:
        """Answer the router; a router that went away is not our problem any more."""
        try:
            channel.send(REPLY, {"id": migration_id, "ok": not error, "stage": stage, "error": error[:256]})
        except OSError as exc:
            LOG.info("migration %s: reply not sent: %s", migration_id, exc)

    def _serve(self, channel: Channel, wait: float) -> str:
        """One migration on the channel, whose state must arrive within ``wait`` seconds; returns the outcome."""
        try:
            data = channel.receive_frame(time.monotonic() + wait)
        except (OSError, WireError) as exc:
            LOG.info("migration connection without a ticket: %s", exc)
            return "no_state"
        ticket = self.tickets.check(data, self.clock())
        if ticket is None:
            LOG.warning("migration refused: its ticket does not check out (%s)", dict(self.tickets.refused))
            return "refused"
        channel.rekey(ticket.id, channel_key(self.key, ticket.nonce))
        try:
            data = channel.receive_frame(time.monotonic() + self.io_timeout)
            migration_id, state = ConnectionState.from_wire(data, channel.verifier, self.clock())
        except (OSError, WireError) as exc:
            LOG.warning("migration state rejected: %s", exc)
            self._reply(channel, ticket.id, "restore", f"rejected: {exc}")
            return "rejected"
        local, remote = (state.local_ip, state.local_port), (state.remote_ip, state.remote_port)
        if migration_id != ticket.id or not ticket.names(local, remote):
            self.tickets.refuse("wrong_connection")
            LOG.warning("migration %s refused: not the connection its ticket names", migration_id)
            self._reply(channel, ticket.id, "restore", "refused: wrong_connection")
            return "refused"
        try:
            app = handoff.connect(self.handoff_path, self.io_timeout)
        except OSError as exc:
            self._reply(channel, migration_id, "restore", f"application unreachable: {exc}")
            return "no_application"
        with app:
            try:
                sock = restore(state, leave_repair=False)
            except RepairError as exc:
                LOG.warning("migration %s: %s", migration_id, exc)
                self._reply(channel, migration_id, "restore", str(exc))
                return "restore_failed"
            self._reply(channel, migration_id, "restore")
            return self._finish(channel, migration_id, state, sock, app)

    def _finish(
        self, channel: Channel, migration_id: str, state: ConnectionState, sock: socket.socket, app: socket.socket
    ) -> str:
        """Wait for go or abort; on go, pass the live connection to the application."""
        try:
            message = channel.receive(time.monotonic() + self.go_timeout, GO, ABORT)
        except (OSError, WireError) as exc:
            drop_silently(sock)
            LOG.info("migration %s abandoned: %s", migration_id, exc)
            return "abandoned"
        if message.body["id"] != migration_id or message.type == ABORT:
            drop_silently(sock)
            return "aborted"
        header = {
            "id": migration_id,
            "local": [state.local_ip, state.local_port],
            "remote": [state.remote_ip, state.remote_port],
        }
        with sock:
            try:
                resume(sock)
                handoff.send_connection(app, sock, header)
            except (OSError, ValueError) as exc:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
                LOG.warning("migration %s: hand-off failed, client reset: %s", migration_id, exc)
                self._reply(channel, migration_id, "handoff", f"hand-off failed: {exc}")
                return "handoff_failed"
        self._reply(channel, migration_id, "handoff")
        return "handed_off"


class _Handler(socketserver.BaseRequestHandler):
    server: MigrationServer

    def handle(self) -> None:
        self.server.receiver.serve_connection(self.request)


class MigrationServer(socketserver.ThreadingTCPServer):
    """The migration port: one thread per incoming migration connection."""

    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, receiver: Receiver, address: tuple[str, int]) -> None:
        """Listen on ``address`` (port 0 picks one) and serve with ``receiver``."""
        self.receiver = receiver
        super().__init__(address, _Handler)

    @property
    def listen_address(self) -> str:
        """Where it listens, as ``ip:port`` (with the port the kernel picked when asked for port 0)."""
        host, port = self.socket.getsockname()[:2]
        return f"{host}:{port}"


def main(argv: list[str] | None = None) -> int:
    """``python -m nlb_sdn.migration.receiver --key-file F --handoff-socket P [--bind A] [--port 7001]``."""
    parser = argparse.ArgumentParser(prog="nlb-sdn-migration-receiver", description=__doc__.splitlines()[0])
    add_version_option(parser)
    parser.add_argument("--key-file", required=True, help="this host's key file (nlb-sdn derive-key)")
    parser.add_argument("--handoff-socket", required=True, help="the application's hand-off Unix socket")
    parser.add_argument("--bind", default="0.0.0.0", help="IPv4 address to listen on (default 0.0.0.0)")
    parser.add_argument("--port", type=int, default=MIGRATION_PORT, help=f"TCP port (default {MIGRATION_PORT})")
    parser.add_argument("--src", default="agent", help="this host's id, as tickets name it (default agent)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        key = load_key(args.key_file)
        server = MigrationServer(Receiver(key, args.handoff_socket, args.src), (args.bind, args.port))
    except (OSError, ValueError) as exc:
        print(f"nlb-sdn-migration-receiver: {exc}", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"nlb-sdn-migration-receiver listening on {server.listen_address}", flush=True)
    with server:
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
