"""The fault benchmark's pure parts (no root): the fault table, summaries over runs, the Markdown, the command line,
and the load figures of tests/lib/fault_load.py (outage window, load on both sides of a fault)."""

from __future__ import annotations

from typing import Any

from benchmarks.faults import FAULTS, FIGURES, MOVED_REASONS, SMOKE_FAULT, counted, markdown, parse_args, summarize
from tests.lib.fault_load import LoadFigures


def a_run(**figures: Any) -> dict[str, Any]:
    """One run's figures, with defaults for the ones not given."""
    return {"broken": 0, "outage_s": 1.0, "packet_ins_per_moved": 0.5, "propagation_s": None, "fault_s": 2.0} | figures


def test_the_table_has_issue_11s_faults_that_exist_and_the_smoke_fault() -> None:
    assert {"master_kill", "master_kill_and_back", "redis_stop_10s", "sentinel_failover", "cut_link"} <= set(FAULTS)
    assert "crash_after_rest" in FAULTS and SMOKE_FAULT in FAULTS
    assert all(fault.title and callable(fault.inject) and callable(fault.lab) for fault in FAULTS.values())
    assert set(MOVED_REASONS) == {"existing_connection", "replumb"}


def test_summary_is_the_median_and_spread_and_skips_missing_figures() -> None:
    runs = [a_run(outage_s=1.0), a_run(outage_s=3.0, broken=1), a_run(outage_s=2.0)]
    summary = summarize(runs)
    assert summary["outage_s"] == {"median": 2.0, "spread": 2.0}
    assert summary["broken"] == {"median": 0, "spread": 1}
    assert "propagation_s" not in summary, "no run measured it"
    assert set(summarize([a_run(propagation_s=0.05)])) == set(FIGURES)
    assert summarize([]) == {}


def test_markdown_has_one_row_per_fault_with_medians_spreads_and_errors() -> None:
    report = {
        "mode": "full",
        "settings": {"runs": 3},
        "environment": {"date": "2026-12-08", "git_commit": "abc"},
        "faults": {
            "cut_link": {
                "title": "cut a core link",
                "summary": summarize([a_run(), a_run(outage_s=1.5)]),
                "errors": [],
            },
            "master_kill": {"title": "kill the master", "summary": {}, "errors": ["run 1: TimeoutError"]},
        },
    }
    table = markdown(report)
    assert "| cut a core link (`cut_link`) | 0 (0) | 1.25 (0.5) | 0.5 (0) | - | 0 |" in table
    assert "| kill the master (`master_kill`) | - | - | - | - | 1 |" in table


def test_command_line_modes_and_fault_choice() -> None:
    assert parse_args([]).mode == "full" and parse_args(["--smoke"]).mode == "smoke"
    assert parse_args(["--only", "cut_link", "--only", "master_kill", "--runs", "1"]).only == [
        "cut_link",
        "master_kill",
    ]


def test_load_figures_outage_is_the_longest_gap_and_spans_needs_every_client() -> None:
    figures = LoadFigures(established=4, broken=0, gaps=[0.4, 2.5], failures=3, ok_times=[[1.0, 5.0], [2.0, 9.0]])
    assert figures.outage == 2.5
    assert figures.spans(3.0) and not figures.spans(6.0) and not figures.spans(0.5)
    assert not LoadFigures(0, 0, [], 0, [[]]).spans(1.0) and LoadFigures(0, 0, [], 0, []).outage == 0.0


def test_packet_ins_count_from_zero_after_a_restart_and_not_at_all_once_dead() -> None:
    assert counted(10, 14, restarted=False) == 4
    assert counted(10, 3, restarted=True) == 3
    assert counted(10, None, restarted=False) == 0
    assert counted(None, 5, restarted=False) == 5
