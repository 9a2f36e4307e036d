"""The fault benchmark (benchmarks/faults.py) in smoke mode: one fault, one run, under load; the report is whole.

No timing is asserted: the figures are the benchmark's, checked here only for being there and sane.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.faults import FIGURES, SMOKE_FAULT
from tests.lib.bench import run_smoke
from tests.lib.lab import needs_lab

pytestmark = [pytest.mark.mininet, needs_lab]


def test_smoke_run_reports_every_figure_of_one_fault(tmp_path: Path) -> None:
    out = tmp_path / "faults.json"
    result = run_smoke("faults.py", out, tmp_path / "work", timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["mode"] == "smoke" and list(report["faults"]) == [SMOKE_FAULT]
    entry = report["faults"][SMOKE_FAULT]
    assert entry["errors"] == [] and len(entry["runs"]) == 1
    [run] = entry["runs"]
    assert run["load_spans_fault"], "load on both sides of the fault"
    assert run["established"] >= 1 and 0 <= run["broken"] <= run["established"]
    assert run["outage_s"] > 0 and run["packet_ins_per_moved"] >= 0
    assert set(entry["summary"]) == set(FIGURES) - {"propagation_s"}, "one controller: no propagation figure"
    assert f"`{SMOKE_FAULT}`" in out.with_suffix(".md").read_text()
