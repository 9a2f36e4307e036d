"""A py-spy profile of the controller during one loaded run, saved as speedscope JSON and summarised by function."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PY_SPY = Path(sys.executable).with_name("py-spy")
RATE_HZ = 100
TOP = 15
STOP_TIMEOUT = 20.0
START_GRACE = 10.0


class ControllerProfile:
    """``py-spy record`` attached to a running process from ``start`` until ``stop`` (or ``bound_s`` seconds)."""

    def __init__(self, pid: int, path: Path, bound_s: float, log: Path) -> None:
        """Profile process ``pid`` into ``path`` (speedscope JSON) for at most ``bound_s`` seconds; py-spy's output
        goes to ``log``."""
        self.pid = pid
        self.path = path
        self.bound_s = bound_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = log

    def start(self) -> None:
        """Start py-spy (non-blocking sampling, so the controller is never paused)."""
        self.path.unlink(missing_ok=True)
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    str(PY_SPY),
                    "record",
                    "--pid",
                    str(self.pid),
                    "--duration",
                    str(max(1, round(self.bound_s))),
                    "--rate",
                    str(RATE_HZ),
                    "--nonblocking",
                    "--format",
                    "speedscope",
                    "--output",
                    str(self.path),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def stop(self) -> dict[str, Any]:
        """Stop py-spy by its PID (SIGINT makes it write the file) and summarise; ``error`` when it wrote nothing."""
        if self.proc is None:
            return {"error": "not started"}
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT)
        if not self.path.exists():
            tail = self.log.read_text(errors="replace").strip().splitlines()[-3:] if self.log.exists() else []
            return {"error": f"py-spy wrote no profile (exit {self.proc.returncode}): {' / '.join(tail)}"}
        return {
            "file": self.path.name,
            "tool": "py-spy",
            "rate_hz": RATE_HZ,
            **summarise(json.loads(self.path.read_text())),
        }


def summarise(speedscope: Mapping[str, Any], top: int = TOP) -> dict[str, Any]:
    """Samples, and the ``top`` functions by own (leaf) samples with their share of own and of inclusive samples."""
    frames = speedscope.get("shared", {}).get("frames", [])
    keys = [(frame.get("name", "?"), short_file(frame.get("file") or "")) for frame in frames]
    own: Counter[tuple[str, str]] = Counter()
    inclusive: Counter[tuple[str, str]] = Counter()
    total = 0
    for profile in speedscope.get("profiles", []):
        for stack in profile.get("samples", []):
            if not stack:
                continue
            total += 1
            own[keys[stack[-1]]] += 1
            for key in {keys[index] for index in stack}:
                inclusive[key] += 1
    functions = [
        {
            "function": name,
            "file": file,
            "own_samples": count,
            "own_share": round(count / total, 4),
            "inclusive_share": round(inclusive[(name, file)] / total, 4),
        }
        for (name, file), count in own.most_common(top)
    ]
    return {"samples": total, "top": functions}


def short_file(path: str) -> str:
    """A source path from its package on (``nlb_sdn/...``, ``os_ken/...``, ``asyncio/...``), else its last 2 parts."""
    parts = Path(path).parts
    for anchor in ("nlb_sdn", "os_ken", "eventlet", "greenlet", "pydantic"):
        if anchor in parts:
            return "/".join(parts[parts.index(anchor) :])
    return "/".join(parts[-2:])


def profile_table(profile: Mapping[str, Any]) -> str:
    """The summary as Markdown: one line per function, own and inclusive share of the samples."""
    if "error" in profile:
        return f"No profile: {profile['error']}"
    lines = [
        f"{profile.get('tool')} at {profile.get('rate_hz')} Hz, {profile.get('samples')} samples of the controller "
        f"(idle threads left out), `{profile.get('file')}` (open it in https://www.speedscope.app/)",
        "",
        "| function | file | own % | inclusive % |",
        "|---|---|---:|---:|",
    ]
    for row in profile.get("top", []):
        lines.append(
            f"| `{row['function']}` | {row['file']} | {row['own_share'] * 100:.1f} | "
            f"{row['inclusive_share'] * 100:.1f} |"
        )
    return "\n".join(lines)
