"""The benchmark suite (benchmarks/run.py) in smoke mode: it runs to completion quickly and every section is sane."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.suite.results import sanity_problems
from benchmarks.suite.settings import BASELINES, CHANGES, SCENARIOS, SECTIONS, SUBJECTS
from tests.lib.bench import positive, run_smoke
from tests.lib.lab import needs_lab

pytestmark = [pytest.mark.mininet, needs_lab]


def test_smoke_run_completes_with_every_section_sane(tmp_path: Path) -> None:
    out = tmp_path / "suite.json"
    result = run_smoke("run.py", out, tmp_path / "work", timeout=180)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    report = json.loads(out.read_text())
    assert report["mode"] == "smoke"
    assert set(report["sections"]) == set(SECTIONS)
    assert sanity_problems(report, SECTIONS) == []
    sections = report["sections"]
    for scenario in SCENARIOS:
        assert positive(sections["connections"]["scenarios"][scenario]["rate"]), scenario
        assert positive(sections["throughput"]["scenarios"][scenario]["download_mbps"]), scenario
    for subject in SUBJECTS:
        for baseline in BASELINES:
            assert positive(sections["connections"]["ratios"][f"{subject}/{baseline}"]["rate"])
            assert positive(sections["throughput"]["ratios"][f"{subject}/{baseline}"]["download_mbps"])
        for change in CHANGES:
            trial = sections["disruption"]["trials"][subject][change]
            assert trial["established_at_change"] > 0 and 0 <= trial["broken_share"] <= 1, (subject, change)
    memory = sections["scale"]["memory"]
    assert [p["tracked"] for p in memory["points"]] == sorted(p["tracked"] for p in memory["points"])
    assert all(p["tracked_reported"] >= p["tracked"] for p in memory["points"])
    assert positive(memory["bytes_per_connection"])
    assert positive(sections["scale"]["allotment"]["median_us"])
    assert sections["scale"]["vips"]["flows_per_switch"] > sections["scale"]["vips"]["flows_per_switch_before"]
    assert "### Targets" in out.with_suffix(".md").read_text()
    assert out.with_suffix(".png").read_bytes().startswith(b"\x89PNG")
