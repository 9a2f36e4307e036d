"""The lab's errors and its command primitives: run a command with a time bound, wait for a condition, stop a
process we started by PID, identify a process instance across PID reuse, read a log's tail."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

COMMAND_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0


class LabError(RuntimeError):
    """The lab could not be brought up, used or torn down as asked."""


class RestError(LabError):
    """The controller REST API answered with an HTTP error status."""

    def __init__(self, method: str, path: str, status: int, body: Any) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {body}")
        self.status = status
        self.body = body


def wait_for(predicate: Callable[[], T], timeout: float, interval: float = 0.1, what: str = "condition") -> T:
    """Poll ``predicate`` until it returns a truthy value and return it; raise TimeoutError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def run(cmd: Sequence[str], timeout: float = COMMAND_TIMEOUT, check: bool = False) -> subprocess.CompletedProcess[str]:
    """Run a command in the root namespace with a time bound and captured text output."""
    try:
        result = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"{' '.join(cmd)}: no answer within {timeout:g}s") from exc
    if check and result.returncode != 0:
        raise LabError(f"{' '.join(cmd)}: exit {result.returncode}: {result.stderr.strip()}")
    return result


def command_line(proc: subprocess.Popen[Any]) -> str:
    """A started process's command line, for logs and errors."""
    args = proc.args
    if isinstance(args, (str, bytes, os.PathLike)):
        return os.fsdecode(args)
    return " ".join(os.fsdecode(arg) if isinstance(arg, (bytes, os.PathLike)) else str(arg) for arg in args)


def tail(path: Path, lines: int = 30) -> str:
    """The last lines of a log file (empty if missing)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def start_time(pid: int) -> int | None:
    """The start time (clock ticks after boot) of process ``pid``, or None if it is gone; with the PID it names one
    process instance, across exec and PID reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[19])


def terminate(proc: subprocess.Popen[Any], timeout: float = STOP_TIMEOUT) -> None:
    """Stop a process we started (and its process group, which it leads) by PID: SIGTERM, then SIGKILL."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signum)
        except ProcessLookupError:
            proc.send_signal(signum)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            continue
