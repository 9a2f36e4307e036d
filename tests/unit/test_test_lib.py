"""The shared test library's contracts other tests rely on: bounded polling and stopping a process by PID."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import pytest

from tests.lib.net import exchange, free_port, loopback_connection
from tests.lib.polling import poll_until, poll_until_async
from tests.lib.processes import stop_process

IGNORES_SIGTERM = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
)


def test_poll_until_returns_the_first_truthy_value_or_the_last_falsy_one_after_the_timeout() -> None:
    values = iter([0, None, "found", "later"])
    assert poll_until(lambda: next(values), timeout=1.0) == "found"
    started = time.monotonic()
    assert poll_until(lambda: [], timeout=0.2) == []
    assert 0.2 <= time.monotonic() - started < 1.0
    assert asyncio.run(poll_until_async(lambda: {}, timeout=0.05)) == {}


def test_stop_process_kills_what_ignores_sigterm_and_reaps_it() -> None:
    proc = subprocess.Popen([sys.executable, "-c", IGNORES_SIGTERM], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    stop_process(proc, timeout=0.5)
    assert proc.returncode is not None and proc.returncode < 0
    proc.stdout.close()


def test_a_loopback_connection_carries_data_and_a_free_port_refuses() -> None:
    with loopback_connection() as (_, client, server):
        client.sendall(b"ping")
        assert server.recv(4) == b"ping"
    with pytest.raises(ConnectionRefusedError):
        exchange(free_port(), b"x")
