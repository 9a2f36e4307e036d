"""A private redis-server for tests and benchmarks: free loopback port, temporary directory, no persistence."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile

from tests.lib.net import free_port
from tests.lib.polling import poll_until
from tests.lib.processes import stop_process

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
START_TIMEOUT = 5.0


def _answers_ping(port: int) -> bool:
    """Whether a Redis server on 127.0.0.1:``port`` answers ``PING`` with ``+PONG``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server process on 127.0.0.1:``port`` (free by default) that can be stopped and started again."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="nlb-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The redis:// URL of database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server (no RDB, no AOF, expired-key events on) and wait until it answers PING."""
        args = [
            REDIS_SERVER,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            self.dir,
            "--save",
            "",
            "--appendonly",
            "no",
            "--notify-keyspace-events",
            "Ex",
            "--daemonize",
            "no",
            "--logfile",
            os.path.join(self.dir, "redis.log"),
        ]
        process = self.process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        poll_until(lambda: process.poll() is not None or _answers_ping(self.port), START_TIMEOUT, 0.02)
        if process.poll() is not None or not _answers_ping(self.port):
            self.stop()
            raise RuntimeError(f"redis-server did not start on port {self.port} (see {self.dir}/redis.log)")

    def stop(self) -> None:
        """Stop the server by its PID (SIGTERM, then SIGKILL after a bound) and reap it."""
        if self.process is not None:
            process, self.process = self.process, None
            stop_process(process)

    def cleanup(self) -> None:
        """Stop the server and remove its directory."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
