"""Benchmark suite: connections, throughput, disruption and scale, as ratios to direct and HAProxy from the same run.

Run as root from the repository root: ``.venv/bin/python benchmarks/run.py [--quick | --smoke] [--only SECTION]``.
Writes the JSON report (``--out``, default ``benchmarks/results/suite.json``) and, beside it, the same figures as a
Markdown table (``.md``, also printed) and a chart (``.png``). ``benchmarks/README.md`` explains every figure.
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
if str(REPO) not in sys.path:  # `python benchmarks/run.py` from anywhere
    sys.path.insert(0, str(REPO))

from benchmarks.suite import lab as lab_sections, scale  # noqa: E402 - after the path fix
from benchmarks.suite.results import markdown, sanity_problems, targets, write_chart  # noqa: E402
from benchmarks.suite.settings import MODES, SECTIONS  # noqa: E402
from nlb_sdn.lab import report as lab_report  # noqa: E402
from nlb_sdn.lab.report import command_output  # noqa: E402
from topologies import SWITCH_OPTS  # noqa: E402

DEFAULT_OUT = REPO / "benchmarks" / "results" / "suite.json"
LAB_DESCRIPTIONS = {
    lab_sections.LabKind.MULTIHOP: "multihop (MultiHopBenchTopo: clients on s1, s2; core s3, p1; backends on s4, s5)",
    lab_sections.LabKind.SINGLE: "single (BenchTopo: every host on s1)",
}


def profile_path(out: Path) -> Path:
    """Where the controller's profile goes: beside the JSON report."""
    return out.with_name(f"{out.stem}.controller-profile.speedscope.json")


def free_port() -> int:
    """An unused TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def environment() -> dict[str, Any]:
    """What the figures depend on: OVS, kernel, CPUs, software versions, git commit, date and machine load."""
    return lab_report.environment(
        ovs_version=command_output(["ovs-vsctl", "--timeout=5", "get", "Open_vSwitch", ".", "ovs_version"]).strip('"'),
        os_ken=importlib.metadata.version("os-ken"),
        mininet=importlib.metadata.version("mininet"),
        haproxy=command_output(["haproxy", "-v"]).split("\n", 1)[0],
    )


def member_ports() -> dict[str, int]:
    """The backend port each scenario's connections end on."""
    return {
        "direct": lab_sections.DIRECT_PORT,
        "haproxy": lab_sections.HAPROXY_MEMBER_PORT,
        **{subject: vip["member_port"] for subject, vip in lab_sections.VIPS.items()},
    }


def l7_section(mode: str, out: Path, workdir: Path) -> dict[str, Any]:
    """Run ``benchmarks/l7.py`` in ``mode`` with its report beside ``out``; its figures, problems and Markdown."""
    from benchmarks import l7

    l7_out = out.with_name(f"{out.stem}.l7.json")
    status = l7.main([*([] if mode == "full" else [f"--{mode}"]), "--out", str(l7_out), "--workdir", str(workdir)])
    found = json.loads(l7_out.read_text()) if l7_out.exists() else {}
    return {
        "file": l7_out.name,
        "exit_status": status,
        "duration_s": found.get("duration_s"),
        "settings": found.get("settings"),
        "figures": found.get("figures"),
        "ratios": found.get("ratios"),
        "cpu_loaded": found.get("cpu_loaded"),
        "problems": found.get("problems", ["l7.py wrote no report"]),
        "markdown": l7_out.with_suffix(".md").read_text() if l7_out.with_suffix(".md").exists() else "",
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--quick",
        action="store_const",
        const="quick",
        dest="mode",
        help="one short round, smaller counts (about a minute)",
    )
    size.add_argument(
        "--smoke",
        action="store_const",
        const="smoke",
        dest="mode",
        help="tiny counts, for CI: checks that everything works (well under a minute)",
    )
    parser.add_argument(
        "--lab",
        type=lab_sections.LabKind,
        choices=list(lab_sections.LabKind),
        default=lab_sections.LabKind.MULTIHOP,
        metavar="{" + ",".join(kind.value for kind in lab_sections.LabKind) + "}",
        help="multihop: clients on two edge switches, a core, backends on two edges (default); single: one switch",
    )
    parser.add_argument(
        "--l7",
        action="store_true",
        help="then run benchmarks/l7.py in the same mode (its own lab) and add its figures to the report",
    )
    parser.add_argument(
        "--only", action="append", choices=SECTIONS, help="run only this section (repeatable; default: every section)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"JSON report; the .md and .png go beside it (default {DEFAULT_OUT})",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep logs and configs here (default: a temporary directory, removed afterwards)",
    )
    args = parser.parse_args(argv)
    args.mode = args.mode or "full"
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the asked sections, write JSON, Markdown and PNG, print the Markdown; exit 1 if a figure is not sane."""
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("benchmarks/run.py needs root (Mininet and Open vSwitch)", file=sys.stderr)
        return 2
    settings = MODES[args.mode]
    sections = [s for s in SECTIONS if s in (args.only or SECTIONS)]
    started = time.monotonic()
    report: dict[str, Any] = {
        "benchmark": "suite",
        "mode": args.mode,
        "sections_run": sections,
        "environment": environment(),
        "settings": {
            **asdict(settings),
            "lab": args.lab.value,
            "topology": LAB_DESCRIPTIONS[args.lab],
            "datapath": SWITCH_OPTS["datapath"],
            "tx_offload": "off",
            "vip_idle_timeout_s": lab_sections.IDLE_TIMEOUT,
            "haproxy_mode": lab_sections.HAPROXY_MODE,
            "ports": member_ports(),
        },
    }
    workdir_cm = (
        contextlib.nullcontext(str(args.workdir))
        if args.workdir is not None
        else tempfile.TemporaryDirectory(prefix="nlb-suite-")
    )
    with workdir_cm as workdir_name:
        workdir = Path(workdir_name)
        workdir.mkdir(parents=True, exist_ok=True)
        found, problems, raw = lab_sections.run_lab(
            settings,
            set(sections),
            workdir / "lab",
            free_port(),
            free_port(),
            lab_kind=args.lab,
            profile_path=profile_path(args.out) if settings.profile else None,
        )
        if "scale" in sections:
            print("scale: controller memory, allotment", file=sys.stderr, flush=True)
            found.setdefault("scale", {})["memory"] = scale.memory_section(settings, workdir, free_port(), free_port())
            found["scale"]["allotment"] = scale.allotment_section(settings)
        if args.l7:
            print("l7: benchmarks/l7.py", file=sys.stderr, flush=True)
            report["l7"] = l7_section(args.mode, args.out, workdir / "l7")
            problems += [f"l7: {line}" for line in report["l7"]["problems"]]
    report["sections"] = found
    report["profile"] = raw.pop("profile", None)
    report["duration_s"] = round(time.monotonic() - started, 1)
    report["loadavg_at_end"] = os.getloadavg()
    report["targets"] = targets(report)
    insane = sanity_problems(report, sections)
    report["problems"] = problems + [f"not a sane figure: {line}" for line in insane]
    report["raw"] = raw
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    table = markdown(report)
    args.out.with_suffix(".md").write_text(table)
    write_chart(report, args.out.with_suffix(".png"))
    print(table)
    print(f"report: {args.out} (+ .md, .png{', ' + profile_path(args.out).name if report['profile'] else ''})")
    return 1 if insane else 0


if __name__ == "__main__":
    sys.exit(main())
