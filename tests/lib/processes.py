"""Processes a test starts (the lab backend on loopback) and stops by PID, never by name."""

from __future__ import annotations

import select
import subprocess
import sys
from typing import Any

import pytest

STOP_TIMEOUT = 5.0
BACKEND_START_TIMEOUT = 15.0


def stop_process(proc: subprocess.Popen[Any], timeout: float = STOP_TIMEOUT) -> None:
    """Stop ``proc`` if it still runs: SIGTERM, then SIGKILL after ``timeout`` s; reap it."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


def start_backend(name: str) -> tuple[subprocess.Popen[str], int]:
    """Start the lab backend ``name`` on 127.0.0.1 with an ephemeral port; the process and the port it printed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "nlb_sdn.lab.backend", "--name", name, "--port", "0", "--bind", "127.0.0.1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], BACKEND_START_TIMEOUT)
    line = proc.stdout.readline() if ready else ""
    if "listening on" not in line:
        stop_process(proc)
        pytest.fail(f"backend did not start: {line!r}")
    return proc, int(line.rsplit(":", 1)[1])
