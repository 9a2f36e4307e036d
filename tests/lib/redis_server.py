"""Private redis-servers for tests and benchmarks: free loopback ports, temporary directories, no persistence.

:class:`SentinelGroup` adds a replica and three Sentinels watching the primary, for failover tests.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile

import redis

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

    def __init__(self, port: int | None = None, replica_of: int | None = None) -> None:
        self.port = port or free_port()
        self.replica_of = replica_of
        """The port of the primary on 127.0.0.1 this server replicates, if any."""
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
        if self.replica_of is not None:
            args += ["--replicaof", "127.0.0.1", str(self.replica_of)]
        process = self.process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        poll_until(lambda: process.poll() is not None or _answers_ping(self.port), START_TIMEOUT, 0.02)
        if process.poll() is not None or not _answers_ping(self.port):
            self.stop()
            raise RuntimeError(f"redis-server did not start on port {self.port} (see {self.dir}/redis.log)")

    def kill(self) -> None:
        """SIGKILL the server by its PID (a crash: no shutdown, no goodbye to clients) and reap it."""
        if self.process is not None:
            process, self.process = self.process, None
            process.kill()
            process.wait(timeout=START_TIMEOUT)

    def stop(self) -> None:
        """Stop the server by its PID (SIGTERM, then SIGKILL after a bound) and reap it."""
        if self.process is not None:
            process, self.process = self.process, None
            stop_process(process)

    def cleanup(self) -> None:
        """Stop the server and remove its directory."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


SERVICE_NAME = "nlbmaster"
"""The service the test Sentinels watch."""
DOWN_AFTER_MS = 1000
"""Sentinel ``down-after-milliseconds``: how long the primary must be silent before it is declared down."""
FAILOVER_TIMEOUT_MS = 5000
"""Sentinel ``failover-timeout``."""


class RedisSentinel:
    """One Redis Sentinel process on 127.0.0.1:``port`` watching the primary on ``primary_port``."""

    def __init__(self, primary_port: int, quorum: int) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="nlb-sentinel-")
        self.config = os.path.join(self.dir, "sentinel.conf")
        with open(self.config, "w", encoding="utf-8") as config:
            config.write(
                f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\ndaemonize no\n"
                f"logfile {os.path.join(self.dir, 'sentinel.log')}\n"
                f"sentinel monitor {SERVICE_NAME} 127.0.0.1 {primary_port} {quorum}\n"
                f"sentinel down-after-milliseconds {SERVICE_NAME} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {SERVICE_NAME} {FAILOVER_TIMEOUT_MS}\n"
                f"sentinel parallel-syncs {SERVICE_NAME} 1\n"
            )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the Sentinel (``redis-server <config> --sentinel``; it rewrites its config) and wait for PING."""
        process = self.process = subprocess.Popen(
            [REDIS_SERVER, self.config, "--sentinel"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        poll_until(lambda: process.poll() is not None or _answers_ping(self.port), START_TIMEOUT, 0.02)
        if process.poll() is not None or not _answers_ping(self.port):
            self.cleanup()
            raise RuntimeError(f"redis sentinel did not start on port {self.port} (see {self.dir}/sentinel.log)")

    def cleanup(self) -> None:
        """Stop the Sentinel by its PID and remove its directory."""
        if self.process is not None:
            process, self.process = self.process, None
            stop_process(process)
        shutil.rmtree(self.dir, ignore_errors=True)


class SentinelGroup:
    """A primary, one replica and three Sentinels (quorum 2) on 127.0.0.1, every process stopped by its PID."""

    def __init__(self, sentinels: int = 3) -> None:
        self.primary = RedisServer()
        self.replica = RedisServer(replica_of=self.primary.port)
        self.sentinels = [RedisSentinel(self.primary.port, quorum=2) for _ in range(sentinels)]

    @property
    def url(self) -> str:
        """The ``redis+sentinel://`` URL of database 0 of the watched service."""
        hosts = ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE_NAME}/0"

    def start(self) -> None:
        """Start the primary, the replica (wait until it is in sync) and the Sentinels (wait until they see both)."""
        try:
            self.primary.start()
            self.replica.start()
            replica = redis.Redis(port=self.replica.port)
            poll_until(lambda: replica.info("replication").get("master_link_status") == "up", START_TIMEOUT, 0.05)
            for sentinel in self.sentinels:
                sentinel.start()
            poll_until(self._sentinels_ready, START_TIMEOUT * 2, 0.1)
            if not self._sentinels_ready():
                raise RuntimeError("the Sentinels do not see the replica and each other")
        except BaseException:
            self.cleanup()
            raise

    def _sentinels_ready(self) -> bool:
        """Whether every Sentinel knows the replica and the other Sentinels."""
        for sentinel in self.sentinels:
            client = redis.Redis(port=sentinel.port, socket_timeout=0.5)
            try:
                state = client.sentinel_masters()[SERVICE_NAME]  # sentinel_master() fails in redis-py 6.4
                if state["num-slaves"] < 1 or state["num-other-sentinels"] < len(self.sentinels) - 1:
                    return False
            except redis.exceptions.RedisError:
                return False
            finally:
                client.close()
        return True

    def primary_port(self) -> int | None:
        """The primary's port as the first Sentinel sees it now, or None if it does not answer."""
        client = redis.Redis(port=self.sentinels[0].port, socket_timeout=0.5)
        try:
            state = client.sentinel_masters().get(SERVICE_NAME)
        except redis.exceptions.RedisError:
            return None
        finally:
            client.close()
        return int(state["port"]) if state else None

    def cleanup(self) -> None:
        """Stop every process by its PID and remove their directories."""
        for sentinel in self.sentinels:
            sentinel.cleanup()
        self.replica.cleanup()
        self.primary.cleanup()
