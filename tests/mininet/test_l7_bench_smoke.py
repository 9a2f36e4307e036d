"""The L7 benchmark (benchmarks/l7.py) in smoke mode: it completes quickly and every figure is positive and finite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.lib.bench import positive, run_smoke
from tests.lib.lab import needs_lab

pytestmark = [pytest.mark.mininet, needs_lab]

SCENARIOS = ("vip", "direct", "haproxy")
FIGURES = ("ttfb_p50_ms", "ttfb_p99_ms", "requests_per_s", "download_mbps")
PAIRS = ("vip/direct", "vip/haproxy", "haproxy/direct")


def test_l7_smoke_run_completes_with_every_figure_positive(tmp_path: Path) -> None:
    out = tmp_path / "l7.json"
    result = run_smoke("l7.py", out, tmp_path / "work", timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    report = json.loads(out.read_text())
    assert report["mode"] == "smoke" and report["benchmark"] == "l7"
    for scenario in SCENARIOS:
        for key in FIGURES:
            assert positive(report["figures"][scenario][key]), (scenario, key, report["figures"][scenario])
    assert positive(report["figures"]["vip"]["migrations_per_s"])
    for pair in PAIRS:
        for key in FIGURES:
            assert positive(report["ratios"][pair][key]), (pair, key)
    for baseline in ("direct", "haproxy"):
        assert positive(report["ratios"][f"vip/{baseline}"]["migrations_per_s"])
    # Every figure anywhere under figures and ratios (not only the ones named above) is sane.
    for group in ("figures", "ratios"):
        for name, values in report[group].items():
            assert all(positive(v) for v in values.values()), (group, name, values)
    # The VIP's requests were migrated, not proxied by the router.
    vip_round = report["raw"]["rounds"]["vip"][0]
    assert vip_round["ttfb_migrations"].get("migrated") == vip_round["ttfb"]["ok"] > 0, vip_round["ttfb_migrations"]
    assert vip_round["download_verified"] and vip_round["download_migrations"].get("migrated") == 1
    assert report["targets"][0]["value"] == report["ratios"]["vip/direct"]["download_mbps"]
    assert "| TTFB p50 ms" in result.stdout and "VIP/HAProxy" in result.stdout
