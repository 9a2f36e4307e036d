"""Benchmark: issue 11's fault figures, one lab run per fault under constant load from several clients.

Run from the repository root, as root, under the lab lock:
``flock /tmp/nlb-mininet.lock .venv/bin/python benchmarks/faults.py [--smoke] [--only FAULT] [--runs N]``.
Each run builds a fresh fabric lab (4 clients, 3 backends, 2 edges, 2 cores), starts downloads that span the fault
and a new-connection loop on every client (``tests/lib/fault_load.py``), injects the fault, and reports: established
connections broken (target 0), the new-connection outage window, the longest gap between two successes of any client
(target <= 3 s), packet-ins per moved connection, the established connections' packet-ins (reasons in
``MOVED_REASONS``) over every controller divided by the downloads (target <= 1), and, where two controllers share one
Redis, the config-change propagation time (a REST change on one controller visible on the other). Three runs per
fault: median and spread (max - min). Adding a fault is one entry in ``FAULTS``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from nlb_sdn.lab.commands import run, terminate  # noqa: E402
from nlb_sdn.lab.harness import Lab, wait_for  # noqa: E402
from nlb_sdn.lab.report import environment  # noqa: E402
from tests.lib.fault_load import FaultLoad, LoadFigures  # noqa: E402
from tests.lib.lab import web_vip  # noqa: E402
from tests.lib.net import free_port  # noqa: E402
from tests.lib.redis_server import DOWN_AFTER_MS, FAILOVER_TIMEOUT_MS, RedisServer, SentinelGroup  # noqa: E402
from topologies import FabricTopo, lab_config  # noqa: E402

DEFAULT_OUT = REPO / "benchmarks" / "results" / "faults.json"
MOVED_REASONS = ("existing_connection", "replumb")
"""Packet-in reasons of an established connection the controller has to handle again (moved, adopted, re-plumbed)."""
TARGETS = {"broken": 0, "outage_s": 3.0, "packet_ins_per_moved": 1.0}
PREFIX = "faults:"
REDIS_OUTAGE_S = 10.0
"""The issue's Redis outage: stopped for 10 s."""
UPLINK_A = 1
"""s1's port toward core s3."""
FOLLOW_TIMEOUT = (DOWN_AFTER_MS + FAILOVER_TIMEOUT_MS) / 1000 + 10


@dataclass(frozen=True)
class Mode:
    """Load sizes of one mode: new-connection loops of ``duration`` s, ``downloads`` spanning the fault."""

    duration: float
    downloads: int
    size: int
    rate: int
    runs: int


MODES = {
    "full": Mode(duration=18.0, downloads=8, size=4_000_000, rate=200_000, runs=3),
    "smoke": Mode(duration=8.0, downloads=3, size=1_500_000, rate=150_000, runs=1),
}


@dataclass
class Bench:
    """One fault run's lab: the first controller (the lab's), the other controllers' REST ports, Redis if any, and
    the ports of controllers the fault restarted (their packet-in counters start from zero)."""

    lab: Lab
    others: list[int] = field(default_factory=list)
    redis: RedisServer | None = None
    sentinels: SentinelGroup | None = None
    restarted: set[int] = field(default_factory=set)

    def ports(self) -> list[int]:
        """Every controller's REST port, the lab's first."""
        return [self.lab.rest_port, *self.others]


def get(port: int, path: str) -> Any:
    """``GET`` one controller's REST API on 127.0.0.1; the decoded JSON."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as response:
        return json.loads(response.read())


def moved_packet_ins(port: int) -> int | None:
    """The controller's packet-ins of established connections so far, None while it does not answer."""
    try:
        counters = get(port, "/v1/stats")["packet_in"]
    except OSError:
        return None
    return sum(int(counters.get(reason, 0)) for reason in MOVED_REASONS)


def holds(port: int, role: str, lab: Lab) -> bool:
    """Whether the controller on REST ``port`` holds the HA ``role`` toward every switch."""
    try:
        found = get(port, "/v1/stats")["ha"]["switches"]
    except OSError:
        return False
    return len(found) == len(lab.topo.data_switches()) and set(found.values()) == {role}


# ---- labs -------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def single_lab(workdir: Path, store: str = "") -> Iterator[Bench]:
    """One controller; with ``store`` ("redis" or "sentinel") its DAM and operator state on that store."""
    with contextlib.ExitStack() as stack:
        redis: RedisServer | None = None
        sentinels: SentinelGroup | None = None
        extra: dict[str, Any] = {}
        if store == "redis":
            redis = RedisServer()
            redis.start()
            stack.callback(redis.cleanup)
            stack.callback(redis.stop)
            extra = {"dam": {"backend": "redis", "url": redis.url, "prefix": PREFIX}}
        elif store == "sentinel":
            sentinels = SentinelGroup()
            sentinels.start()
            stack.callback(sentinels.cleanup)
            url = sentinels.url
            extra = {
                "dam": {"backend": "redis", "url": url, "prefix": PREFIX},
                "state": {"backend": "redis", "url": url, "prefix": PREFIX},
            }
        topo = FabricTopo(clients=4, backends=3)
        config = lab_config(topo, [web_vip(topo, idle_timeout=30)], **extra)
        lab = Lab(topo, config, workdir=str(workdir), ofp_port=free_port(), rest_port=free_port())
        stack.enter_context(lab)
        lab.wait_switches_connected()
        yield Bench(lab, redis=redis, sentinels=sentinels)


def ha_config(topo: FabricTopo, redis: RedisServer, member: str, lbu_id: int) -> dict[str, Any]:
    """A controller of the HA pair: election, DAM and operator state on one Redis."""
    ha = {"enabled": True, "coordination_url": redis.url, "group": "faults", "member_id": member, "lock_timeout": 2}
    store = {"backend": "redis", "url": redis.url, "prefix": PREFIX}
    return lab_config(topo, [web_vip(topo, idle_timeout=30)], lbu_id=lbu_id, dam=store, state=dict(store), ha=ha)


@contextlib.contextmanager
def ha_lab(workdir: Path) -> Iterator[Bench]:
    """Two controllers on one Redis (c1 master, c2 slave), every switch connected to both (as tests/mininet/test_ha)."""
    with contextlib.ExitStack() as stack:
        redis = RedisServer()
        redis.start()
        stack.callback(redis.cleanup)
        stack.callback(redis.stop)
        topo = FabricTopo(clients=4, backends=3)
        lab = Lab(
            topo, ha_config(topo, redis, "c1", 1), workdir=str(workdir), ofp_port=free_port(), rest_port=free_port()
        )
        stack.enter_context(lab)
        lab.wait_switches_connected()
        wait_for(lambda: holds(lab.rest_port, "master", lab), timeout=15, what="c1 master")
        second_rest, second_ofp = free_port(), free_port()
        config = ha_config(topo, redis, "c2", 2)
        config["controller"]["rest"]["port"] = second_rest
        (workdir / "c2.yaml").write_text(yaml.safe_dump(config))
        command = [sys.executable, "-m", "nlb_sdn.cli", "controller", "--config", str(workdir / "c2.yaml")]
        with open(workdir / "c2.log", "ab") as log:
            second = subprocess.Popen(
                [*command, "--ofp-tcp-listen-port", str(second_ofp)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        stack.callback(terminate, second)
        for switch in topo.data_switches():
            targets = [f"tcp:127.0.0.1:{lab.ofp_port}", f"tcp:127.0.0.1:{second_ofp}"]
            run(["ovs-vsctl", "--timeout=5", "set-controller", switch, *targets])
        wait_for(lambda: holds(second_rest, "slave", lab), timeout=30, what="c2 slave")
        wait_for(lambda: holds(lab.rest_port, "master", lab), timeout=30, what="c1 master")
        yield Bench(lab, others=[second_rest], redis=redis)


def propagation_s(bench: Bench, weight: int) -> float | None:
    """Seconds from a REST weight change on the first controller until the second one shows it (via Redis)."""
    if not bench.others:
        return None
    started = time.monotonic()
    bench.lab.rest("PUT", "/v1/vips/web/members/h3", {"weight": weight})

    def shown() -> bool:
        try:
            return bool(get(bench.others[0], "/v1/vips/web/members/h3")["weight"] == weight)
        except (OSError, KeyError):
            return False

    wait_for(shown, timeout=10, interval=0.01, what="the change on the second controller")
    return time.monotonic() - started


# ---- faults -----------------------------------------------------------------------------------------------------


def kill_master(bench: Bench) -> None:
    """SIGKILL the master (c1); wait until c2 is master of every switch."""
    proc = bench.lab.controller_proc
    assert proc is not None
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    wait_for(lambda: holds(bench.others[0], "master", bench.lab), timeout=15, what="c2 master")


def kill_master_and_back(bench: Bench) -> None:
    """Kill the master, then start it again; wait until it is slave of every switch."""
    kill_master(bench)
    bench.lab.start_controller()
    bench.restarted.add(bench.lab.rest_port)
    wait_for(lambda: holds(bench.lab.rest_port, "slave", bench.lab), timeout=30, what="c1 back as slave")


def stop_redis(bench: Bench) -> None:
    """Stop Redis for ``REDIS_OUTAGE_S``, then start it again and wait for the DAM to replay."""
    assert bench.redis is not None
    bench.redis.stop()
    time.sleep(REDIS_OUTAGE_S)  # the fault's length is the figure's definition, not a guessed wait
    bench.redis.start()
    wait_for(lambda: not bench.lab.rest("GET", "/v1/stats")["dam"]["degraded"], timeout=15, what="DAM replayed")


def fail_over_sentinel(bench: Bench) -> None:
    """SIGKILL the Sentinel-watched primary; wait for the promotion and the controller to follow it."""
    group = bench.sentinels
    assert group is not None
    group.primary.kill()
    wait_for(lambda: group.primary_port() == group.replica.port, timeout=FOLLOW_TIMEOUT, what="promotion")
    wait_for(
        lambda: not bench.lab.rest("GET", "/v1/stats")["dam"]["degraded"], timeout=FOLLOW_TIMEOUT, what="DAM follows"
    )


def cut_link(bench: Bench) -> None:
    """Bring s1's uplink to core A down; wait for the reroute and the port-down event; bring it back up."""
    port = ["ovs-ofctl", "-O", "OpenFlow13", "mod-port", "s1", str(UPLINK_A)]
    run([*port, "down"], check=True)
    try:
        wait_for(lambda: bench.lab.rest("GET", "/v1/stats")["fabric"]["down_ports"] >= 1, timeout=10, what="port down")
    finally:
        run([*port, "up"], check=True)
    wait_for(lambda: bench.lab.rest("GET", "/v1/stats")["fabric"]["down_ports"] == 0, timeout=10, what="port up")


def crash_after_rest(bench: Bench) -> None:
    """REST changes, then SIGKILL the controller and start it again; every change must be back."""
    lab = bench.lab
    lab.rest("PUT", "/v1/vips/web/members/h1", {"weight": 4})
    lab.rest("PUT", "/v1/vips/web/members/h2/state", {"state": "draining"})
    before = lab.rest("GET", "/v1/vips")["vips"]
    proc = lab.controller_proc
    assert proc is not None
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    lab.start_controller()
    bench.restarted.add(lab.rest_port)
    lab.wait_switches_connected()
    if lab.rest("GET", "/v1/vips")["vips"] != before:
        raise AssertionError("REST changes lost across the crash")


@dataclass(frozen=True)
class Fault:
    """One entry of the table: its lab (a context manager yielding a Bench) and what it does under the load."""

    title: str
    lab: Callable[[Path], contextlib.AbstractContextManager[Bench]]
    inject: Callable[[Bench], None]


FAULTS: dict[str, Fault] = {
    "master_kill": Fault("kill the master controller (HA)", ha_lab, kill_master),
    "master_kill_and_back": Fault("kill the master and bring it back (HA)", ha_lab, kill_master_and_back),
    "redis_stop_10s": Fault("stop Redis for 10 s", lambda w: single_lab(w, "redis"), stop_redis),
    "sentinel_failover": Fault(
        "fail over the Redis primary (Sentinel)", lambda w: single_lab(w, "sentinel"), fail_over_sentinel
    ),
    "cut_link": Fault("cut a core link (s1-s3)", single_lab, cut_link),
    "crash_after_rest": Fault("crash the controller after REST changes", single_lab, crash_after_rest),
}
SMOKE_FAULT = "cut_link"


# ---- runs and report ----------------------------------------------------------------------------------------------


def run_once(fault: Fault, mode: Mode, workdir: Path) -> dict[str, Any]:
    """One lab run of ``fault`` under the mode's load; its figures."""
    with fault.lab(workdir) as bench:
        propagation = propagation_s(bench, 2)
        before = {port: moved_packet_ins(port) for port in bench.ports()}
        load = FaultLoad(bench.lab, mode.duration, mode.downloads, mode.size, mode.rate)
        load.start()
        load.wait_flowing()
        injected_at = time.time()
        fault.inject(bench)
        recovered_s = time.time() - injected_at
        figures: LoadFigures = load.finish()
        after = {port: moved_packet_ins(port) for port in bench.ports()}
    moved = sum(counted(before[port], after[port], port in bench.restarted) for port in bench.ports())
    return {
        "broken": figures.broken,
        "established": figures.established,
        "outage_s": round(figures.outage, 3),
        "gaps_s": [round(gap, 3) for gap in figures.gaps],
        "failed_attempts": figures.failures,
        "load_spans_fault": figures.spans(injected_at),
        "packet_ins_moved": moved,
        "packet_ins_per_moved": round(moved / max(figures.established, 1), 3),
        "propagation_s": None if propagation is None else round(propagation, 4),
        "fault_s": round(recovered_s, 2),
    }


def counted(before: int | None, after: int | None, restarted: bool) -> int:
    """One controller's packet-ins across a run: none known once it is dead, all of them since a restart."""
    if after is None:
        return 0
    return after - (0 if restarted or before is None else before)


FIGURES = ("broken", "outage_s", "packet_ins_per_moved", "propagation_s", "fault_s")


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median and spread (max - min) of each figure over the runs that finished."""
    summary: dict[str, Any] = {}
    for name in FIGURES:
        values = [run[name] for run in runs if run.get(name) is not None]
        if values:
            summary[name] = {"median": statistics.median(values), "spread": round(max(values) - min(values), 4)}
    return summary


def markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown table, one row per fault."""
    lines = [
        "# Fault figures (issue 11)",
        "",
        f"Mode {report['mode']}, {report['settings']['runs']} run(s) per fault, median (spread = max - min). "
        f"Targets: broken {TARGETS['broken']}, outage <= {TARGETS['outage_s']} s, "
        f"packet-ins per moved connection <= {TARGETS['packet_ins_per_moved']}. Written by benchmarks/faults.py.",
        "",
        "| fault | broken established | new-connection outage (s) | packet-ins per moved connection "
        "| config propagation (s) | errors |",
        "|---|---|---|---|---|---|",
    ]
    for name, entry in report["faults"].items():
        cells = [_cell(entry["summary"].get(figure)) for figure in ("broken", "outage_s", "packet_ins_per_moved")]
        cells.append(_cell(entry["summary"].get("propagation_s")))
        lines.append(f"| {entry['title']} (`{name}`) | " + " | ".join(cells) + f" | {len(entry['errors'])} |")
    lines += ["", f"Environment: {report['environment']['date']}, commit {report['environment']['git_commit']}."]
    return "\n".join(lines) + "\n"


def _cell(figure: dict[str, Any] | None) -> str:
    """A table cell: the median and its spread, or a dash."""
    return "-" if figure is None else f"{figure['median']:g} ({figure['spread']:g})"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--smoke",
        action="store_const",
        const="smoke",
        default="full",
        dest="mode",
        help=f"one run of {SMOKE_FAULT} with a short load (for tests/mininet)",
    )
    parser.add_argument("--only", action="append", choices=sorted(FAULTS), help="run only this fault (repeatable)")
    parser.add_argument("--runs", type=int, default=None, help="runs per fault (default 3, smoke 1)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON report, .md beside it ({DEFAULT_OUT})")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the labs' logs here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run every asked fault, write the JSON and Markdown reports; exit 1 if a run failed."""
    args = parse_args(argv)
    mode = MODES[args.mode]
    names = args.only or ([SMOKE_FAULT] if args.mode == "smoke" else list(FAULTS))
    runs = args.runs or mode.runs
    report: dict[str, Any] = {
        "benchmark": "faults",
        "mode": args.mode,
        "environment": environment(),
        "settings": {"runs": runs, "moved_reasons": list(MOVED_REASONS), **vars(mode)},
        "targets": TARGETS,
        "faults": {},
    }
    workdir_cm = (
        contextlib.nullcontext(str(args.workdir))
        if args.workdir is not None
        else tempfile.TemporaryDirectory(prefix="nlb-faults-")
    )
    with workdir_cm as workdir_name:
        for name in names:
            report["faults"][name] = run_fault(name, runs, mode, Path(workdir_name))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    table = markdown(report)
    args.out.with_suffix(".md").write_text(table)
    print(table)
    return 1 if any(entry["errors"] for entry in report["faults"].values()) else 0


def run_fault(name: str, runs: int, mode: Mode, workdir: Path) -> dict[str, Any]:
    """Every run of one fault: the runs' figures, their summary and the errors of runs that failed."""
    fault = FAULTS[name]
    results: list[dict[str, Any]] = []
    errors: list[str] = []
    for index in range(runs):
        print(f"{name}: run {index + 1} of {runs}", file=sys.stderr, flush=True)
        where = workdir / f"{name}-{index + 1}"
        where.mkdir(parents=True, exist_ok=True)
        try:
            results.append(run_once(fault, mode, where))
        except Exception as exc:  # noqa: BLE001 - one failed run is reported, the other faults still run
            errors.append(f"run {index + 1}: {type(exc).__name__}: {exc}")
    return {"title": fault.title, "runs": results, "summary": summarize(results), "errors": errors}


if __name__ == "__main__":
    sys.exit(main())
