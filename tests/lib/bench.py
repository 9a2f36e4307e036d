"""Benchmark scripts in tests: a smoke run and checks of its report."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from benchmarks.suite.results import is_number

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def positive(value: object) -> bool:
    """A positive, finite number (not a bool)."""
    return is_number(value) and value > 0  # type: ignore[operator]


def run_smoke(script: str, out: Path, workdir: Path | None, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run ``benchmarks/<script> --smoke`` writing its report to ``out`` (and its logs to ``workdir``, for the scripts
    that keep some), bounded by ``timeout``; its result (how long it took is never asserted: benchmarks measure)."""
    where = [] if workdir is None else ["--workdir", str(workdir)]
    return subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--smoke", "--out", str(out), *where],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
