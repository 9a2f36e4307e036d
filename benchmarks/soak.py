"""Soak benchmark: mixed load through both dispatch modes with member churn, health flaps and controller restarts.

Run as root from the repository root: ``.venv/bin/python benchmarks/soak.py [--duration 900]`` (``--duration 60`` is
the smoke mode). Writes the JSON report (``--out``, default ``benchmarks/results/soak.json``) and, beside it, the
Markdown (``.md``, also printed). ``benchmarks/README.md`` explains the procedure and every figure.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import socket
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python benchmarks/soak.py` from anywhere
    sys.path.insert(0, str(REPO))

from benchmarks.soaklib import lab as soak_lab  # noqa: E402 - after the path fix
from benchmarks.soaklib.figures import (  # noqa: E402
    broken_streams,
    markdown,
    memory_growth,
    memory_windows,
    missing_figures,
    pool_short,
    targets,
)
from nlb_sdn.lab import report as lab_report  # noqa: E402
from nlb_sdn.lab.report import command_output  # noqa: E402

DEFAULT_OUT = REPO / "benchmarks" / "results" / "soak.json"


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """An unused port on loopback."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=900.0, help="seconds of load (default 900; 60: smoke)")
    parser.add_argument("--short-rate", type=float, default=10.0, help="new connections/s per client and VIP")
    parser.add_argument("--streams", type=int, default=2, help="long-lived streams per client and VIP")
    parser.add_argument("--stream-rate", type=int, default=10_000, help="bytes/s of each long-lived stream")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON report (default {DEFAULT_OUT})")
    parser.add_argument("--workdir", type=Path, default=None, help="keep logs here (default: a temporary directory)")
    args = parser.parse_args(argv)
    if args.duration < 30:
        parser.error("--duration must be at least 30 s")
    return args


def figures(found: dict[str, Any], settings: soak_lab.SoakSettings) -> dict[str, Any]:
    """The report's figures from the run's raw findings."""
    state = found["state"]
    load_end = min(found["load_s"], settings.duration_s)
    baseline, final = memory_windows([r["at"] for r in state.restarts], settings.cycle_s, load_end)
    signals = [r["signal"] for r in state.restarts]
    failed_steps = [e for e in state.events if not e.get("ok")]
    return {
        "memory": {p: memory_growth(state.samples, p, baseline, final) for p in ("controller", "ovs-vswitchd")},
        "final_comparison": found["final_comparison"],
        "comparison_at_load_end": found["comparison_at_load_end"],
        "settle_s": found["settle_s"],
        "long_lived": broken_streams(found["streams"]),
        "short": pool_short(state.short, found["load_s"]),
        "restarts": state.restarts,
        "restarts_text": f"{len(signals)} ({signals.count('SIGTERM')} / {signals.count('SIGKILL')})",
        "churn_text": f"{len(state.events)} ({len(failed_steps)})",
        "flaps": len(state.flaps),
    }


def problems(report: dict[str, Any], found: dict[str, Any]) -> list[str]:
    """What went wrong in the run itself (not a missed target): failed churn steps, flaps that had no effect."""
    state = found["state"]
    found_problems = [f"churn step failed: {e}" for e in state.events if not e.get("ok")]
    found_problems += [f"flap without effect: {f}" for f in state.flaps if f.get("left_allotment_s") is None]
    found_problems += [f"missing figure: {name}" for name in missing_figures(report)]
    return found_problems


def main(argv: list[str] | None = None) -> int:
    """Run the soak, write JSON and Markdown, print the Markdown; exit 1 if a figure is missing."""
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("benchmarks/soak.py needs root (Mininet and Open vSwitch)", file=sys.stderr)
        return 2
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    settings = soak_lab.settings_for(args.duration, args.short_rate, args.streams, args.stream_rate)
    report: dict[str, Any] = {
        "benchmark": "soak",
        "environment": lab_report.environment(
            ovs_version=command_output(["ovs-vsctl", "--timeout=5", "get", "Open_vSwitch", ".", "ovs_version"]),
            os_ken=importlib.metadata.version("os-ken"),
        ),
        "settings": {
            **asdict(settings),
            "cycle_s": settings.cycle_s,
            "idle_timeout_s": soak_lab.IDLE_TIMEOUT,
            "stall_s": soak_lab.STREAM_STALL_S,
            "vips": soak_lab.VIPS,
            "churn_steps": soak_lab.CHURN_STEPS,
        },
    }
    started = time.monotonic()
    workdir_cm = (
        contextlib.nullcontext(str(args.workdir))
        if args.workdir is not None
        else tempfile.TemporaryDirectory(prefix="nlb-soak-")
    )
    with workdir_cm as workdir_name:
        found = soak_lab.run_soak(settings, Path(workdir_name), free_port(), free_port(), free_port(socket.SOCK_DGRAM))
    report["duration_s"] = settings.duration_s
    report["churn_ended_s"] = found["load_s"]
    report["settle_wait_s"] = found["settle_s"]
    report["wall_s"] = round(time.monotonic() - started, 1)
    report["loadavg_at_end"] = os.getloadavg()
    report["figures"] = figures(found, settings)
    report["targets"] = targets(report)
    report["problems"] = problems(report, found)
    state = found["state"]
    report["raw"] = {
        "samples": [asdict(s) for s in state.samples],
        "events": state.events,
        "flaps": state.flaps,
        "short_runs": state.short,
        "streams": found["streams"],
        "stats_at_end": found["stats_at_end"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=str) + "\n")
    table = markdown(report)
    args.out.with_suffix(".md").write_text(table)
    print(table)
    print(f"report: {args.out} (+ .md)")
    return 1 if missing_figures(report) else 0


if __name__ == "__main__":
    sys.exit(main())
