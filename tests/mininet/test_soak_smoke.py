"""The soak benchmark (benchmarks/soak.py) for 45 s: it runs through churn, flaps and both kinds of restart and
writes a complete report (every figure present; the targets themselves are not checked here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.soaklib.figures import missing_figures
from tests.lib.bench import BENCHMARKS
from tests.lib.lab import needs_lab

pytestmark = [pytest.mark.mininet, needs_lab]


def test_a_45_second_soak_writes_a_complete_report(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    cmd = [sys.executable, str(BENCHMARKS / "soak.py"), "--duration", "45", "--out", str(out)]
    result = subprocess.run(
        [*cmd, "--workdir", str(tmp_path / "work")],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert missing_figures(report) == [] and len(report["targets"]) == 5
    figures = report["figures"]
    assert [r["signal"] for r in figures["restarts"]] == ["SIGTERM", "SIGKILL"]
    assert figures["flaps"] >= 2 and figures["long_lived"]["streams"] == 12
    assert figures["short"]["ok"] > 0
    assert figures["comparison_at_load_end"]["tracked"] > 0
    assert all(p["baseline_kb"] and p["final_kb"] for p in figures["memory"].values())
    assert report["raw"]["samples"] and report["loadavg_at_end"]
    assert "| leaked flows | 0 |" in out.with_suffix(".md").read_text()
