"""The soak benchmark's pure parts (no root): flow parsing and the leak comparison, memory growth from its windows,
broken streams, pooled short connections, targets, Markdown, the command line, and the streams script over
loopback (a complete stream, a stalled one and one closed early)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from typing import Any

import pytest

from benchmarks.soak import parse_args
from benchmarks.soaklib import figures
from benchmarks.soaklib.figures import Sample
from benchmarks.soaklib.lab import STREAMS_SCRIPT, settings_for
from nlb_sdn.flows.pipeline import CookieKind, make_cookie
from tests.lib.processes import start_backend, stop_process

VIPS = {"10.0.0.100", "10.0.0.101"}
NAT = make_cookie(CookieKind.NAT, 1, 1, 2)
BASE = make_cookie(CookieKind.BASE, 1, 1)


def flow(cookie: int, table: int, match: str) -> str:
    """One ``ovs-ofctl dump-flows`` line."""
    return f"cookie={cookie:#x}, duration=1.2s, table={table}, n_packets=3, n_bytes=200, idle_timeout=10, {match}"


FLOWS = [
    flow(NAT, 1, "priority=100,tcp,nw_src=10.0.0.1,nw_dst=10.0.0.100,tp_src=40000,tp_dst=80 actions=goto_table:3"),
    flow(NAT, 2, "priority=100,tcp,nw_src=10.0.0.11,nw_dst=10.0.0.1,tp_src=80,tp_dst=40000 actions=goto_table:3"),
    flow(NAT, 4, "tcp,nw_src=10.0.0.2,nw_dst=10.0.0.101,tp_src=40001,tp_dst=80 actions=set_field:10.0.0.12->ip_dst"),
    flow(NAT, 5, "tcp,nw_src=10.0.0.12,nw_dst=10.0.0.2,tp_src=8080,tp_dst=40001 actions=set_field:10.0.0.101->ip_src"),
    flow(BASE, 0, "priority=200,tcp,nw_dst=10.0.0.100,tp_dst=80 actions=CONTROLLER:128"),
]


def tracked(client: str, vip: str) -> dict[str, Any]:
    """A ``/v1/connections`` entry."""
    return {"client": client, "vip": "v", "vip_address": vip, "member": "h1"}


def test_nat_flow_keys_take_forward_and_reverse_entries_of_both_pinnings_and_skip_other_cookies() -> None:
    forward, reverse = figures.nat_flow_keys(FLOWS, VIPS)
    assert forward == {("10.0.0.1:40000", "10.0.0.100:80"), ("10.0.0.2:40001", "10.0.0.101:80")}
    assert reverse == {"10.0.0.1:40000", "10.0.0.2:40001"}


def test_equal_table_and_flows_leak_nothing() -> None:
    forward, reverse = figures.nat_flow_keys(FLOWS, VIPS)
    found = figures.compare_connections(
        [tracked("10.0.0.1:40000", "10.0.0.100:80"), tracked("10.0.0.2:40001", "10.0.0.101:80")], forward, reverse
    )
    assert found["equal"] and found["leaked_flows"] == 0 and found["tracked"] == 2


def test_every_kind_of_mismatch_counts_as_a_leak() -> None:
    forward, reverse = figures.nat_flow_keys(FLOWS, VIPS)
    reverse.add("10.0.0.3:40002")  # a reverse entry without its forward entry
    found = figures.compare_connections(
        [tracked("10.0.0.1:40000", "10.0.0.100:80"), tracked("10.0.0.9:1234", "10.0.0.100:80")], forward, reverse
    )
    assert found["flows_without_connection"] == ["10.0.0.2:40001->10.0.0.101:80"]
    assert found["connections_without_flows"] == ["10.0.0.9:1234->10.0.0.100:80"]
    assert found["reverse_without_forward"] == ["10.0.0.3:40002"]
    assert found["leaked_flows"] == 3 and not found["equal"]


def test_memory_growth_compares_the_medians_of_the_warm_baseline_and_the_final_window() -> None:
    samples = [Sample(float(t), {"controller": 1000 + t, "ovs-vswitchd": None}) for t in range(0, 100)]
    baseline, final = figures.memory_windows([20.0], cycle_s=50.0, load_s=100.0)
    assert baseline == (30.0, 45.0) and final[0] == 85.0
    found = figures.memory_growth(samples, "controller", baseline, final)
    assert found["baseline_kb"] == 1037.0 and found["final_kb"] == 1092.0
    assert found["growth"] == pytest.approx(55 / 1037, abs=1e-4)
    assert found["peak_kb"] == 1099
    assert figures.memory_growth(samples, "ovs-vswitchd", baseline, final)["growth"] is None


def test_without_a_restart_the_baseline_starts_a_fifth_of_a_cycle_into_the_load() -> None:
    assert figures.memory_windows([], cycle_s=100.0, load_s=300.0)[0] == (20.0, 50.0)


def test_broken_streams_count_everything_that_did_not_carry_every_byte() -> None:
    streams = [
        {"outcome": "ok", "max_gap_s": 0.1},
        {"outcome": "stalled", "max_gap_s": 0.2, "target": "10.0.0.100:80"},
        {"outcome": "error: closed early", "max_gap_s": 3.0},
        {"outcome": "no report"},
    ]
    found = figures.broken_streams(streams)
    assert found["streams"] == 4 and found["broken"] == 3 and found["max_gap_s"] == 3.0
    assert found["outcomes"]["stalled"] == 1 and len(found["broken_detail"]) == 3


def test_short_connections_pool_over_the_load_time_with_failures_by_vip() -> None:
    runs = [
        {"target": "10.0.0.100:80", "ok": 90, "errors": 10, "error_kinds": {"timeout": 10}, "served_by": {"h1": 90}},
        {"target": "10.0.0.101:80", "ok": 100, "errors": 0, "error_kinds": {}, "served_by": {"h1": 50, "h2": 50}},
    ]
    found = figures.pool_short(runs, load_s=10.0)
    assert found["ok"] == 190 and found["errors"] == 10 and found["rate"] == 19.0
    assert found["errors_by_target"] == {"10.0.0.100:80": {"timeout": 10}}
    assert found["served_by"] == {"h1": 140, "h2": 50}


def report(growth: float | None = 0.02, leaked: int = 0, broken: int = 0) -> dict[str, Any]:
    """A soak report with the figures the targets read."""
    memory = {p: {"growth": growth, "baseline_kb": 1.0, "final_kb": 1.0, "peak_kb": 1} for p in ("controller",)}
    memory["ovs-vswitchd"] = {"growth": None if growth is None else growth / 2}
    return {
        "duration_s": 900.0,
        "churn_ended_s": 901.0,
        "settle_wait_s": 12.0,
        "settings": {"duration_s": 900.0},
        "environment": {"date": "d", "git_commit": "abcdef0123", "loadavg_at_start": [1.0, 1.0, 1.0]},
        "loadavg_at_end": [2.0, 2.0, 2.0],
        "figures": {
            "memory": memory,
            "final_comparison": {"leaked_flows": leaked, "equal": leaked == 0, "tracked": 0},
            "long_lived": {"broken": broken, "streams": 12},
            "short": {"ok": 1, "errors": 0},
            "restarts": [{"back_s": 7.0}],
        },
    }


def test_targets_put_every_figure_beside_its_goal() -> None:
    met = {row["target"]: row["met"] for row in figures.targets(report())}
    assert all(met.values()) and len(met) == 5
    missed = {row["target"]: row["met"] for row in figures.targets(report(growth=0.3, leaked=1, broken=2))}
    assert not any(missed.values())


def test_a_missing_figure_is_named() -> None:
    rows = report(growth=None)
    rows["targets"] = figures.targets(rows)
    assert figures.missing_figures(rows) == ["controller memory growth", "ovs-vswitchd memory growth"]


def test_markdown_shows_targets_figures_and_the_load_average() -> None:
    rows = report(growth=0.05)
    rows["targets"] = figures.targets(rows)
    text = figures.markdown(rows)
    assert "| controller memory growth | <= 10% | +5.0% | yes |" in text
    assert "| leaked flows | 0 | 0 | yes |" in text
    assert "load average at start 1.00 / 1.00 / 1.00, at the end 2.00 / 2.00 / 2.00" in text
    assert "[7.0]" in text


def test_command_line_defaults_to_fifteen_minutes_and_refuses_tiny_durations() -> None:
    assert parse_args([]).duration == 900.0
    assert parse_args(["--duration", "60"]).duration == 60.0
    with pytest.raises(SystemExit):
        parse_args(["--duration", "5"])


def test_a_long_soak_has_five_cycles_and_a_short_one_three() -> None:
    assert settings_for(900, 10, 2, 10_000).cycles == 5 and settings_for(900, 10, 2, 10_000).cycle_s == 180
    assert settings_for(60, 10, 2, 10_000).cycles == 3


def run_streams(port: int, size: int, rate: int, stall: float) -> list[dict[str, Any]]:
    """Run the streams script against 127.0.0.1:port; its streams."""
    cmd = [sys.executable, str(STREAMS_SCRIPT), "--target", f"127.0.0.1:{port}", "--count", "2"]
    cmd += ["--bytes", str(size), "--rate", str(rate), "--stall", str(stall), "--timeout", "20"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    return json.loads(run.stdout.strip().splitlines()[-1])["streams"]


def test_streams_carry_every_byte_of_the_pattern_from_the_backend() -> None:
    proc, port = start_backend("b1")
    try:
        streams = run_streams(port, 30_000, 100_000, 5.0)
    finally:
        stop_process(proc)
    assert [s["outcome"] for s in streams] == ["ok", "ok"]
    assert all(s["bytes"] == 30_000 and s["served_by"] == "b1" and s["max_gap_s"] < 5.0 for s in streams)


def serve_once(body: bytes, linger: float) -> int:
    """A loopback server answering two requests with a 200 head and ``body``, then waiting ``linger`` s (or closing
    at once when 0); its port."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(20.0)

    def serve() -> None:
        """Answer both connections, then close them."""
        held = []
        with server:
            for _ in range(2):
                conn, _addr = server.accept()
                conn.recv(4096)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nX-Served-By: fake\r\n\r\n" + body)
                held.append(conn)
            threading.Event().wait(linger)
            for conn in held:
                conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return int(server.getsockname()[1])


def test_a_stream_that_stops_receiving_is_stalled_and_one_closed_early_is_an_error() -> None:
    pattern = bytes(i % 251 for i in range(100))
    stalled = run_streams(serve_once(pattern, 3.0), 1000, 1000, 0.5)
    assert [s["outcome"] for s in stalled] == ["stalled", "stalled"]
    assert all(s["bytes"] == 100 for s in stalled)
    closed = run_streams(serve_once(pattern, 0.0), 1000, 1000, 5.0)
    assert [s["outcome"] for s in closed] == ["error: closed early"] * 2
    corrupt = run_streams(serve_once(b"x" * 100, 0.0), 1000, 1000, 5.0)
    assert [s["outcome"] for s in corrupt] == ["error: corrupt data"] * 2
