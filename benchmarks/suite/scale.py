"""Scale figures without Mininet: controller memory at many tracked connections (fed by ``benchmarks/ofload.py``) and
allotment recomputation time at many endpoints (pure core)."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks.suite.results import ratio
from benchmarks.suite.settings import Settings
from nlb_sdn.flows.pipeline import Table
from nlb_sdn.health.allotment import Candidate, compute_allotment
from nlb_sdn.lab.harness import run, wait_for

REPO = Path(__file__).resolve().parents[2]
OFLOAD = REPO / "benchmarks" / "ofload.py"
FAKE_SWITCHES = 4
FIRST_VIP = "10.0.0.100"  # ofload's default --vip, the VIP of its --print-config
SECOND_VIP = "10.0.0.101"
OFLOAD_MIN_RATE = 500.0  # packet-ins per second below which an ofload run is cut off by its --duration
STOP_TIMEOUT = 5.0
CONNECTION_TABLES = (str(int(Table.CONNECTIONS)), str(int(Table.REVERSE)))


def log(message: str) -> None:
    """Progress on stderr."""
    print(message, file=sys.stderr, flush=True)


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def rest_get(port: int, path: str) -> Any:
    """GET a controller REST path on loopback (no proxy)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}{path}", timeout=10.0) as response:
        return json.load(response)


def controller_config(max_tracked: int, rest_port: int) -> dict[str, Any]:
    """ofload's own nlb_sdn config (its fake switches and VIP), plus a second VIP over the same members and room for
    every connection; each ofload run feeds one VIP, so the two runs' 5-tuples never repeat. The fabric lists a set of
    fake switches per run: ofload's switches hold no flows, so a second run under the same dpids would be those
    switches reconnecting without the first run's connections, which the controller then (rightly) forgets."""
    printed = run(
        [sys.executable, str(OFLOAD), "--print-config", "--switches", str(2 * FAKE_SWITCHES)], timeout=60.0, check=True
    ).stdout
    config = json.loads(printed)
    config["controller"]["max_connections"] = 2 * max_tracked
    config["controller"]["rest"]["port"] = rest_port
    second = dict(config["vips"][0], name="bench2", address=SECOND_VIP)
    config["vips"].append(second)
    return config


def ofload_run(ofp_port: int, vip: str, packet_ins: int, out: Path, dpid_base: int) -> dict[str, Any]:
    """Feed ``packet_ins`` new connections to ``vip`` through ofload's fake switches (dpids from ``dpid_base``); its
    results section."""
    bound = packet_ins / OFLOAD_MIN_RATE + 10.0
    run(
        [
            sys.executable,
            str(OFLOAD),
            "--port",
            str(ofp_port),
            "--switches",
            str(FAKE_SWITCHES),
            "--dpid-base",
            str(dpid_base),
            "--vip",
            vip,
            "--max-packets",
            str(packet_ins),
            "--warmup",
            "0",
            "--duration",
            f"{bound:.0f}",
            "--out",
            str(out),
        ],
        timeout=bound + 60.0,
        check=True,
    )
    return json.loads(out.read_text())["results"]


def memory_section(settings: Settings, workdir: Path, ofp_port: int, rest_port: int) -> dict[str, Any]:
    """Controller RSS with no connection and at each tracked count, tracked connections and flow entries sent."""
    first, second = settings.tracked
    path = workdir / "scale-controller.json"
    path.write_text(json.dumps(controller_config(second, rest_port), indent=1))
    log_path = workdir / "scale-controller.log"
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "nlb_sdn.cli",
                "controller",
                "--config",
                str(path),
                "--ofp-tcp-listen-port",
                str(ofp_port),
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:

        def answering() -> bool:
            """Whether the controller's REST API answers (failing fast if it died)."""
            if proc.poll() is not None:
                raise RuntimeError(f"scale controller exited with {proc.returncode}; see {log_path}")
            try:
                rest_get(rest_port, "/v1/stats")
            except OSError:
                return False
            return True

        wait_for(answering, 30.0, 0.1, "the scale controller's REST API")
        baseline = rss_bytes(proc.pid)
        points = []
        flow_entries = 0
        for index, (vip, packet_ins) in enumerate(((FIRST_VIP, first), (SECOND_VIP, second - first))):
            results = ofload_run(
                ofp_port, vip, packet_ins, workdir / f"scale-ofload-{index}.json", 1 + index * FAKE_SWITCHES
            )
            flow_entries += sum(
                n
                for switch in results["per_switch"]
                for table, n in switch["flow_mods_by_table"].items()
                if table in CONNECTION_TABLES
            )
            tracked = first if index == 0 else second
            stats = rest_get(rest_port, "/v1/stats")
            reported = stats["connections"]["total"]
            rss = rss_bytes(proc.pid)
            points.append(
                {
                    "tracked": tracked,
                    "tracked_reported": reported,
                    "rss_bytes": rss,
                    "flow_entries": flow_entries,
                    "bytes_per_connection": round((rss - baseline) / reported, 1),
                    "ofload_responses_per_s": results["responses_per_s"],
                    "timeouts": results["timeouts"],
                    "refused": stats.get("refused"),
                }
            )
            log(f"  {tracked} connections: RSS {rss / 1e6:.1f} MB, tracked {reported}, flow entries {flow_entries}")
    finally:
        stop(proc)
    low, high = points
    slope = (high["rss_bytes"] - low["rss_bytes"]) / (high["tracked_reported"] - low["tracked_reported"])
    return {
        "baseline_rss_bytes": baseline,
        "points": points,
        "bytes_per_connection": round(slope, 1),
        "fake_switches": FAKE_SWITCHES,
    }


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a process we started (its own session) by PID: SIGTERM, then SIGKILL."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            return
        os.killpg(proc.pid, signum)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            continue


def candidates(count: int) -> list[Candidate]:
    """``count`` members with varied capacity and load, every tenth failed (as benchmarks/health.py builds them)."""
    return [
        Candidate(
            name=f"m{i:05d}",
            pip=f"10.1.{i // 250}.{i % 250 + 1}",
            pport=8080,
            capacity=100.0 + 50.0 * (i % 7),
            load=float((i * 37) % 160),
            eligible=i % 10 != 9,
            reason="" if i % 10 != 9 else "health failed",
        )
        for i in range(count)
    ]


def timed_us(fn: Any, calls: int) -> list[float]:
    """Wall time of ``calls`` calls of ``fn`` in microseconds, after one untimed call."""
    fn()
    samples = []
    for _ in range(calls):
        start = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - start) / 1000.0)
    return samples


def allotment_section(settings: Settings) -> dict[str, Any]:
    """compute_allotment over ``allotment_endpoints`` candidates against sorting them by name (its floor)."""
    members = candidates(settings.allotment_endpoints)
    service = ("10.0.0.100", 80, "tcp", "")
    allotment = timed_us(lambda: compute_allotment(service, members, now=0.0), settings.allotment_calls)
    baseline = timed_us(lambda: sorted(members, key=lambda c: c.name), settings.allotment_calls)
    median, floor = round(statistics.median(allotment), 1), round(statistics.median(baseline), 1)
    log(f"  allotment, {settings.allotment_endpoints} endpoints: {median:.0f} us (sorted: {floor:.0f} us)")
    return {
        "endpoints": settings.allotment_endpoints,
        "calls": settings.allotment_calls,
        "median_us": median,
        "p99_us": round(sorted(allotment)[int(0.99 * (len(allotment) - 1))], 1),
        "sorted_median_us": floor,
        "ratio_to_sorted": ratio(median, floor),
    }
