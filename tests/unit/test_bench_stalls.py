"""benchmarks/stalls.py: the smoke mode runs from the command line in seconds and reports every figure."""

from __future__ import annotations

import json

from benchmarks.stalls import CALL_KINDS, SMOKE, exponent
from tests.lib.bench import positive, run_smoke

SMOKE_TIMEOUT = 120.0


def test_growth_exponent_tells_linear_from_quadratic():
    assert exponent([100, 200, 400], [1.0, 2.0, 4.0]) == 1.0
    assert exponent([100, 400], [1.0, 16.0]) == 2.0
    assert exponent([100], [1.0]) is None


def test_smoke_mode_reports_every_size_and_figure(tmp_path):
    out = tmp_path / "stalls.json"
    result = run_smoke("stalls.py", out, None, SMOKE_TIMEOUT)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["mode"] == "smoke"
    changes, syncs = report["config_change"], report["first_sync"]
    assert [row["members"] for row in changes] == list(SMOKE.config_sizes) * 2
    assert [row["hosts"] for row in syncs] == list(SMOKE.sync_sizes) * 2
    for row in changes:
        assert positive(row["apply"]["median_s"]) and positive(row["longest_call_s"])
    for row in syncs:
        assert positive(row["sync"]["median_s"]) and row["messages"] == 2 * row["hosts"]
    assert {target["target"].split(",")[0] for target in report["targets"]} == {
        "weight change",
        "first H&L sync",
        "longest single core call",
    }
    assert "Growth exponents" in result.stdout
    calls = report["longest_calls"]
    assert [row["kind"] for row in calls] == [kind[0] for kind in CALL_KINDS]
    for row in calls:
        assert len(row["sizes"]) == len(row["longest_s"]) == 3 and all(positive(value) for value in row["longest_s"])
    assert "Longest single call per kind" in result.stdout
