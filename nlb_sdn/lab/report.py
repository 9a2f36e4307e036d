"""What benchmark figures depend on, recorded the same way by every benchmark: date, git commit, machine, load."""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def command_output(cmd: list[str], cwd: Path = REPO) -> str:
    """The stripped stdout of a short command, or "" when it fails."""
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=10.0, cwd=cwd)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo ("" when unknown)."""
    with contextlib.suppress(OSError):
        return next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            "",
        )
    return ""


def environment(**extra: Any) -> dict[str, Any]:
    """Date, git commit (and whether the tree is dirty), kernel, CPUs, Python, ``extra`` fields, load at start."""
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "git_commit": command_output(["git", "rev-parse", "HEAD"]),
        "git_dirty": bool(command_output(["git", "status", "--porcelain", "--untracked-files=no"])),
        "kernel": platform.release(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        **extra,
        "loadavg_at_start": os.getloadavg(),
    }
