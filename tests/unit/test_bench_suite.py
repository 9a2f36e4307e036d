"""The benchmark suite's pure parts (no root): medians, ratios, targets, sanity checks, Markdown, chart, HAProxy
config, the disruption download helper over loopback, the allotment figure and the command line."""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.run import parse_args
from benchmarks.suite import lab, profile, results, scale
from benchmarks.suite.lab import DOWNLOADS_SCRIPT, haproxy_config
from benchmarks.suite.settings import BASELINES, CHANGES, SCENARIOS, SECTIONS, SMOKE, SUBJECTS
from nlb_sdn.lab.backend import pattern_sha256
from tests.lib.processes import start_backend, stop_process

RATES = {
    "vip_controller": 1000.0,
    "vip_switch": 4000.0,
    "vip_switch_learn": 1800.0,
    "direct": 5000.0,
    "haproxy": 2000.0,
}


def sample_report() -> dict[str, Any]:
    """A report as run.py writes it, with round numbers."""
    connections = {
        s: {
            "rate": RATES[s],
            "connect_p50_ms": 2.0,
            "connect_p99_ms": 8.0,
            "idle_connect_p50_ms": 0.5,
            "idle_connect_p99_ms": 1.0,
            "packet_ins_per_connection": 0.0,
        }
        for s in SCENARIOS
    }
    throughput = {s: {"download_mbps": 1000.0 if s != "haproxy" else 500.0} for s in SCENARIOS}
    trial = {"downloads": 6, "established_at_change": 6, "broken": 0, "broken_share": 0.0}
    return {
        "mode": "smoke",
        "settings": {"clients": 3, "concurrency": 8, "download_bytes": 2_000_000, "repeats": 1},
        "environment": {"date": "2026-11-26T10:00:00+00:00", "git_commit": "0123456789abcdef", "git_dirty": False},
        "duration_s": 20.0,
        "sections": {
            "connections": {
                "scenarios": connections,
                "ratios": results.ratios(
                    connections,
                    [
                        "rate",
                        "connect_p50_ms",
                        "connect_p99_ms",
                        "idle_connect_p50_ms",
                        "idle_connect_p99_ms",
                        "packet_ins_per_connection",
                    ],
                ),
            },
            "throughput": {"scenarios": throughput, "ratios": results.ratios(throughput, ["download_mbps"])},
            "disruption": {
                "trials": {s: {c: dict(trial) for c in CHANGES} for s in SUBJECTS},
                "totals": {s: {"broken": 0, "established_at_change": 24, "broken_share": 0.0} for s in SUBJECTS},
            },
            "scale": {
                "memory": {
                    "baseline_rss_bytes": 90_000_000,
                    "points": [
                        {
                            "tracked": 10_000,
                            "tracked_reported": 10_004,
                            "rss_bytes": 98_000_000,
                            "flow_entries": 20_008,
                            "bytes_per_connection": 800.0,
                        },
                        {
                            "tracked": 100_000,
                            "tracked_reported": 100_004,
                            "rss_bytes": 170_000_000,
                            "flow_entries": 200_008,
                            "bytes_per_connection": 800.0,
                        },
                    ],
                    "bytes_per_connection": 800.0,
                },
                "allotment": {"endpoints": 1000, "median_us": 900.0, "sorted_median_us": 30.0, "ratio_to_sorted": 30.0},
                "vips": {
                    "count": 100,
                    "apply_s": 2.5,
                    "per_vip_ms": 25.0,
                    "flows_per_switch_before": 40,
                    "flows_per_switch": 240,
                    "flows_per_vip": 2.0,
                },
            },
        },
        "problems": [],
    }


def test_ratios_divide_every_subject_by_every_baseline():
    figures = {
        "vip_controller": {"rate": 1000.0},
        "vip_switch": {"rate": 4000.0},
        "direct": {"rate": 5000.0},
        "haproxy": {"rate": 2000.0},
    }
    found = results.ratios(figures, ["rate"])
    assert set(found) == {f"{s}/{b}" for s in SUBJECTS for b in BASELINES}
    assert found["vip_switch/direct"]["rate"] == 0.8
    assert found["vip_switch/haproxy"]["rate"] == 2.0
    assert found["vip_controller/direct"]["rate"] == 0.2


@pytest.mark.parametrize(
    ("top", "bottom"), [(1.0, 0.0), (None, 1.0), (1.0, None), (math.nan, 1.0), (1.0, math.inf), (True, 1.0)]
)
def test_ratio_is_none_when_undefined(top, bottom):
    assert results.ratio(top, bottom) is None


def test_median_figures_skip_missing_values():
    runs = [{"rate": 1.0, "p": None}, {"rate": 3.0, "p": None}, {"rate": 2.0}]
    assert results.median_figures(runs, ["rate", "p"]) == {"rate": 2.0, "p": None}


def test_broken_share_is_undefined_without_exposed_downloads():
    assert results.broken_share(1, 4) == 0.25
    assert results.broken_share(0, 0) is None


def test_targets_report_value_and_verdict():
    verdicts = {t["target"]: t for t in results.targets(sample_report())}
    assert verdicts["dispatch switch new conn/s / direct"]["value"] == 0.8
    assert verdicts["dispatch switch new conn/s / direct"]["met"] is True
    assert verdicts["dispatch switch new conn/s / haproxy"]["met"] is True
    assert verdicts["controller memory per tracked connection (bytes)"]["met"] is True
    assert all(t["met"] for t in verdicts.values())


def test_targets_flag_a_miss_and_leave_unmeasured_open():
    report = sample_report()
    report["sections"]["disruption"]["totals"]["vip_switch"]["broken_share"] = 0.25
    del report["sections"]["scale"]
    verdicts = {t["target"]: t for t in results.targets(report)}
    assert verdicts["VIP, dispatch switch (conntrack): established connections broken by changes"]["met"] is False
    assert verdicts["controller memory per tracked connection (bytes)"]["met"] is None


def test_a_sane_report_has_no_problems():
    assert results.sanity_problems(sample_report(), SECTIONS) == []


def test_sanity_flags_missing_sections_and_bad_values():
    report = sample_report()
    connections = report["sections"]["connections"]
    connections["scenarios"]["haproxy"]["rate"] = 0.0
    connections["ratios"] = results.ratios(connections["scenarios"], connections["scenarios"]["direct"])
    report["sections"]["throughput"]["scenarios"]["direct"]["download_mbps"] = math.nan
    report["sections"]["disruption"]["trials"]["vip_switch"]["drain"]["established_at_change"] = 0
    report["sections"]["disruption"]["trials"]["vip_switch"]["drain"]["broken_share"] = None
    del report["sections"]["scale"]
    found = results.sanity_problems(report, SECTIONS)
    assert "connections.haproxy.rate: 0.0" in found
    assert "throughput.direct.download_mbps: nan" in found
    assert "disruption.vip_switch.drain.established_at_change: 0" in found
    assert "disruption.vip_switch.drain.broken_share: None" in found
    assert "scale: missing" in found
    assert "connections.ratios.vip_switch/haproxy.rate: None" in found
    assert not any(line.startswith("connections.ratios.vip_switch/direct") for line in found)


def test_sanity_only_checks_the_sections_asked():
    report = sample_report()
    del report["sections"]["scale"]
    assert results.sanity_problems(report, ["connections", "throughput", "disruption"]) == []


def test_markdown_has_targets_every_section_and_the_ratios():
    text = results.markdown(sample_report())
    for heading in ("### Targets", "### New connections", "### Bulk throughput", "### Disruption", "### Scale"):
        assert heading in text
    rate_row = next(line for line in text.splitlines() if line.startswith("| new connections/s (3 clients x 8"))
    cells = [cell.strip() for cell in rate_row.strip("|").split("|")]
    assert cells[1:] == ["1000", "4000", "1800", "5000", "2000", "0.20", "0.50", "0.80", "2.00", "0.36", "0.90"]
    assert "| download Mbit/s (2 MB, 1 connection) |" in text
    assert "| all | 0 of 24 (0.0 %) | 0 of 24 (0.0 %) | 0 of 24 (0.0 %) |" in text
    assert "| controller memory per tracked connection (bytes, slope between the two counts) | 800 | 1024" in text
    assert "| 240; 2.0 | 40 | 6.0 |" in text
    assert "### Problems" not in text


def test_markdown_renders_missing_figures_as_dashes():
    report = sample_report()
    report["sections"]["connections"]["scenarios"]["haproxy"]["rate"] = None
    report["sections"]["connections"]["ratios"] = results.ratios(
        report["sections"]["connections"]["scenarios"], ["rate"]
    )
    report["problems"] = ["haproxy round 1 loaded: 3 failed connections"]
    text = results.markdown(report)
    rate_row = next(line for line in text.splitlines() if line.startswith("| new connections/s"))
    assert rate_row.split("|")[SCENARIOS.index("haproxy") + 2].strip() == "-"
    assert "- haproxy round 1 loaded: 3 failed connections" in text


def test_chart_is_written_as_png(tmp_path: Path):
    path = tmp_path / "charts" / "suite.png"
    results.write_chart(sample_report(), path)
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    partial = copy.deepcopy(sample_report())
    del partial["sections"]["scale"], partial["sections"]["throughput"]
    results.write_chart(partial, tmp_path / "partial.png")
    assert (tmp_path / "partial.png").stat().st_size > 1000


def test_haproxy_config_balances_every_member_round_robin(tmp_path: Path):
    text = haproxy_config(("10.0.0.99", 80), [("10.0.0.11", 80), ("10.0.0.12", 80)], maxconn=1000)
    assert "    bind 10.0.0.99:80" in text
    assert "    balance roundrobin" in text and "    mode tcp" in text and "    maxconn 1000" in text
    assert [line.split()[2] for line in text.splitlines() if line.strip().startswith("server ")] == [
        "10.0.0.11:80",
        "10.0.0.12:80",
    ]
    if shutil.which("haproxy"):
        path = tmp_path / "haproxy.cfg"
        path.write_text(text)
        check = subprocess.run(["haproxy", "-c", "-q", "-f", str(path)], capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stderr


def test_pattern_checksum_matches_the_backend_pattern():
    size = 70_000
    assert pattern_sha256(size) == hashlib.sha256(bytes(i % 251 for i in range(size))).hexdigest()


def test_downloads_helper_times_and_verifies_every_download():
    proc, port = start_backend("h9")
    try:
        run = subprocess.run(
            [
                sys.executable,
                str(DOWNLOADS_SCRIPT),
                "--target",
                f"127.0.0.1:{port}",
                "--count",
                "3",
                "--bytes",
                "20000",
                "--rate",
                "100000",
                "--timeout",
                "10",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        stop_process(proc)
    assert run.returncode == 0, run.stderr
    downloads = json.loads(run.stdout.strip().splitlines()[-1])["downloads"]
    assert len(downloads) == 3
    for item in downloads:
        assert item["target"] == f"127.0.0.1:{port}"
        assert item["result"]["ok"] and item["result"]["sha256"] == pattern_sha256(20_000)
        assert item["ended"] - item["started"] >= 0.15  # 20 kB at 100 kB/s


def test_allotment_section_times_compute_allotment_and_its_floor():
    found = scale.allotment_section(SMOKE)
    assert found["endpoints"] == SMOKE.allotment_endpoints
    assert found["median_us"] > 0 and found["sorted_median_us"] > 0
    assert found["ratio_to_sorted"] == results.ratio(found["median_us"], found["sorted_median_us"])
    assert len(scale.candidates(50)) == 50 and sum(not c.eligible for c in scale.candidates(50)) == 5


def test_command_line_modes_and_sections():
    assert parse_args([]).mode == "full"
    assert parse_args(["--smoke"]).mode == "smoke"
    assert parse_args(["--quick", "--only", "scale", "--only", "disruption"]).only == ["scale", "disruption"]
    with pytest.raises(SystemExit):
        parse_args(["--quick", "--smoke"])
    with pytest.raises(SystemExit):
        parse_args(["--only", "nope"])


def test_spread_and_round_ratios_give_median_and_min_max_per_pair():
    rounds = {s: [{"rate": RATES[s] * factor, "download_mbps": None} for factor in (1.0, 0.5, 2.0)] for s in SCENARIOS}
    rounds["direct"] = [{"rate": 1000.0}, {"rate": 1000.0}, {"rate": 1000.0}]
    assert results.spread(rounds["vip_switch"], ["rate", "download_mbps"]) == {
        "rate": [2000.0, 8000.0],
        "download_mbps": None,
    }
    found = results.round_ratios(rounds, ["rate", "download_mbps"])
    assert set(found) == {f"{s}/{b}" for s in SUBJECTS for b in BASELINES}
    assert found["vip_switch/direct"]["rate"] == {"rounds": [4.0, 2.0, 8.0], "median": 4.0, "min": 2.0, "max": 8.0}
    assert found["vip_switch/haproxy"]["rate"]["rounds"] == [2.0, 2.0, 2.0]
    assert found["vip_switch/direct"]["download_mbps"]["median"] is None


def test_markdown_shows_every_ratio_with_its_spread_and_the_profile():
    report = sample_report()
    rounds = {s: [{"rate": RATES[s]}, {"rate": RATES[s] * 1.1}] for s in SCENARIOS}
    rounds["direct"] = [{"rate": 5000.0}, {"rate": 4000.0}]
    report["sections"]["connections"]["ratio_rounds"] = results.round_ratios(rounds, ["rate"])
    report["profile"] = {
        "tool": "py-spy",
        "rate_hz": 100,
        "samples": 200,
        "file": "suite.controller-profile.speedscope.json",
        "top": [
            {
                "function": "classify",
                "file": "nlb_sdn/core/x.py",
                "own_samples": 50,
                "own_share": 0.25,
                "inclusive_share": 0.5,
            }
        ],
    }
    text = results.markdown(report)
    assert "### Ratios round by round: median (min-max) over the rounds" in text
    row = next(line for line in text.splitlines() if line.startswith("| new connections/s |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    # vip_switch/direct: 4000/5000 and 4400/4000 -> 0.8 and 1.1; vip_switch/haproxy: 2.0 both rounds
    assert cells[3:5] == ["0.95 (0.80-1.10)", "2.00 (2.00-2.00)"]
    assert "### Controller profile" in text
    assert "| `classify` | nlb_sdn/core/x.py | 25.0 | 50.0 |" in text


def test_profile_summary_counts_own_and_inclusive_samples_per_function():
    speedscope = {
        "shared": {
            "frames": [
                {"name": "run", "file": "/x/site-packages/os_ken/base/app_manager.py", "line": 1},
                {"name": "classify", "file": "/work/wt/nlb_sdn/core/balancer.py", "line": 10},
                {"name": "classify", "file": "/work/wt/nlb_sdn/core/balancer.py", "line": 12},
                {"name": "send", "file": "/usr/lib/python3.11/socket.py", "line": 5},
            ]
        },
        "profiles": [
            {"type": "sampled", "samples": [[0, 1], [0, 2], [0, 1, 3], []], "weights": [0.01] * 4},
            {"type": "sampled", "samples": [[0]], "weights": [0.01]},
        ],
    }
    summary = profile.summarise(speedscope, top=2)
    assert summary["samples"] == 4
    assert summary["top"] == [
        {
            "function": "classify",
            "file": "nlb_sdn/core/balancer.py",
            "own_samples": 2,
            "own_share": 0.5,
            "inclusive_share": 0.75,
        },
        {
            "function": "send",
            "file": "python3.11/socket.py",
            "own_samples": 1,
            "own_share": 0.25,
            "inclusive_share": 0.25,
        },
    ]
    assert profile.profile_table({"error": "py-spy wrote nothing"}) == "No profile: py-spy wrote nothing"


def test_cpu_meter_counts_process_groups_and_ended_children():
    meter = lab.CpuMeter({"self": os.getpid()}, groups={"group": [os.getpid()]}, children="clients")
    meter.start()
    subprocess.run([sys.executable, "-c", "sum(i * i for i in range(3_000_000))"], check=True)
    cores = meter.stop()
    assert set(cores) == {"self_cores", "group_cores", "clients_cores", "machine_cores"}
    assert cores["clients_cores"] > 0
    assert lab.group_cpu_seconds([]) is None


def test_multihop_lab_sends_each_client_to_its_own_backend_when_direct():
    topo = lab.MultiHopBenchTopo(clients=4)
    assert topo.backends == ["h1", "h2", "h3", "h4"]
    assert lab.scenario_targets(topo, "direct") == {
        "c1": ("10.0.0.11", lab.DIRECT_PORT),
        "c2": ("10.0.0.12", lab.DIRECT_PORT),
        "c3": ("10.0.0.13", lab.DIRECT_PORT),
        "c4": ("10.0.0.14", lab.DIRECT_PORT),
    }
    hosts = {h["name"]: h["switch"] for h in topo.fabric_config()["hosts"]}
    assert hosts["p1"] == "s3" and {hosts["c1"], hosts["c2"]} == {"s1", "s2"}
    assert lab.scenario_targets(topo, "haproxy")["c4"] == ("10.0.0.99", lab.HAPROXY_PORT)


def test_command_line_chooses_the_lab():
    assert parse_args([]).lab is lab.LabKind.MULTIHOP
    assert parse_args(["--lab", "single"]).lab is lab.LabKind.SINGLE
    with pytest.raises(SystemExit):
        parse_args(["--lab", "nope"])


def test_l7_figures_join_the_report_when_asked():
    assert parse_args([]).l7 is False and parse_args(["--l7"]).l7 is True
    report = sample_report()
    report["l7"] = {"markdown": "| figure | L7 VIP |\n|---|---:|\n| TTFB p50 ms | 8.06 |\n", "problems": []}
    text = results.markdown(report)
    assert "### L7 VIP (router, migrated) against direct and HAProxy `mode http`" in text
    assert "| TTFB p50 ms | 8.06 |" in text
