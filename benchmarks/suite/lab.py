"""The Mininet sections of the suite, all in one lab: connections, throughput, disruption and the many-VIP figure.

The lab (``LabKind``) is the multi-hop one by default (MultiHopTopo: clients on edges s1 and s2, core s3, backends on
edges s4 and s5, HAProxy host ``p1`` on the core) or, with ``--lab single``, one SingleTopo switch. Userspace OVS, tx
offload off on every host interface, harness defaults. Every compared path runs in it: clients ``c1..cN``; members
``h1..h3`` behind the VIPs (one per dispatch mode) and behind HAProxy on ``p1``; ``h4`` is the spare member the
disruption section adds (and client 4's direct target). Each path gets its own member port, so no connection entry
left by one scenario can capture another's replies (see benchmarks/README.md, notes):

| scenario | client connects to | served by |
|---|---|---|
| vip_controller | 10.0.0.100:80 (``dispatch: controller``) | h1..h3 port 80 |
| vip_switch | 10.0.0.101:80 (``dispatch: switch``) | h1..h3 port 8080 |
| direct | ``hN`` port 8000 (client ``cN``; h1..h4 are not members on that port) | hN port 8000 |
| haproxy | 10.0.0.99:80 (HAProxy on p1, mode tcp, roundrobin) | h1..h3 port 80 |
"""

from __future__ import annotations

import enum
import json
import re
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.connections import nlb_counters, pool
from benchmarks.ofload import cpu_seconds, machine_busy_seconds
from benchmarks.suite.profile import ControllerProfile
from benchmarks.suite.results import NO_RATIO, broken_share, median_figures, ratios, round_ratios, spread
from benchmarks.suite.settings import CHANGES, SCENARIOS, SUBJECTS, Settings
from nlb_sdn.flows.pipeline import KIND_SHIFT, CookieKind
from nlb_sdn.lab.backend import pattern_sha256
from nlb_sdn.lab.harness import Lab, LabError, run, wait_for
from topologies import LabTopo, MultiHopTopo, SingleTopo, lab_config

PROXY = "p1"
PROXY_OCTET = 99
SPARE = "h4"
MEMBERS = ("h1", "h2", "h3")
VIPS = {
    "vip_controller": {
        "name": "web-ctl",
        "address": "10.0.0.100",
        "port": 80,
        "member_port": 80,
        "dispatch": "controller",
    },
    "vip_switch": {
        "name": "web-sw",
        "address": "10.0.0.101",
        "port": 80,
        "member_port": 8080,
        "dispatch": "switch",
        "switch_pinning": "conntrack",
    },
    "vip_switch_learn": {
        "name": "web-learn",
        "address": "10.0.0.102",
        "port": 80,
        "member_port": 8081,
        "dispatch": "switch",
        "switch_pinning": "learn",
    },
}
DIRECT_PORT = 8000
HAPROXY_PORT = 80
HAPROXY_MEMBER_PORT = 80  # the same backend servers as the controller-dispatched VIP
HAPROXY_MODE = "tcp"  # a layer-4 proxy like ours, and HAProxy's cheapest mode
HAPROXY_MAXCONN = 4096  # needs 2 fds per connection; Mininet hosts allow 20000
IDLE_TIMEOUT = 15
WARMUP_CONCURRENCY = 4
COLLECT_MARGIN = 30.0
CHANGE_AT = 0.4  # fraction of a disruption download's duration after which the change is applied
MANY_VIP_BASE = 150  # the many-VIP figure uses 10.0.0.150 and up
APPLY_TIMEOUT = 120.0
COOKIE = re.compile(r"\bcookie=0x([0-9a-f]+)")
DOWNLOADS_SCRIPT = Path(__file__).with_name("downloads.py")
OVS_PID_FILE = Path("/var/run/openvswitch/ovs-vswitchd.pid")
CONNECTION_KEYS = (
    "rate",
    "connect_p50_ms",
    "connect_p99_ms",
    "idle_connect_p50_ms",
    "idle_connect_p99_ms",
    "packet_ins_per_connection",
    "ovs_cores",
    "controller_cores",
    "haproxy_cores",
    "clients_cores",
    "backends_cores",
    "machine_cores",
)
THROUGHPUT_KEYS = ("download_mbps",)

Target = tuple[str, int]


def log(message: str) -> None:
    """Progress on stderr."""
    print(message, file=sys.stderr, flush=True)


class LabKind(enum.Enum):
    """Which lab the suite runs in."""

    MULTIHOP = "multihop"
    """MultiHopBenchTopo: clients on two edges, one core, backends on two edges (the default)."""
    SINGLE = "single"
    """BenchTopo: every host on one switch."""


class BenchTopo(SingleTopo):
    """SingleTopo with 3 clients, members h1..h3, the spare member h4, and the HAProxy host p1 (10.0.0.99)."""

    def __init__(self, clients: int = 3) -> None:
        """Clients as asked, four backends, plus the proxy host."""
        super().__init__(clients=clients, backends=len(MEMBERS) + 1)

    def build(self) -> None:
        """SingleTopo's switch and hosts, then p1 on the next port."""
        super().build()
        self.add_lab_host(PROXY, PROXY_OCTET, "s1", len(self.clients) + len(self.backends) + 1)


class MultiHopBenchTopo(MultiHopTopo):
    """MultiHopTopo with the clients asked, members h1..h3, the spare member h4, and p1 (10.0.0.99) on the core."""

    def __init__(self, clients: int = 4) -> None:
        """Clients as asked, four backends, plus the proxy host."""
        super().__init__(clients=clients, backends=len(MEMBERS) + 1)

    def build(self) -> None:
        """MultiHopTopo's switches and hosts, then p1 on the core's first free port."""
        super().build()
        self.add_lab_host(PROXY, PROXY_OCTET, "s3", self.core_port(0))


LAB_TOPOLOGIES: dict[LabKind, type[BenchTopo] | type[MultiHopBenchTopo]] = {
    LabKind.MULTIHOP: MultiHopBenchTopo,
    LabKind.SINGLE: BenchTopo,
}


def vip_entry(topo: LabTopo, subject: str) -> dict[str, Any]:
    """The config entry of a subject's VIP over h1..h3."""
    vip = VIPS[subject]
    return {
        "name": vip["name"],
        "address": vip["address"],
        "port": vip["port"],
        "dispatch": vip["dispatch"],
        **({"switch_pinning": vip["switch_pinning"]} if "switch_pinning" in vip else {}),
        "idle_timeout": IDLE_TIMEOUT,
        "members": topo.members(vip["member_port"], list(MEMBERS)),
    }


def haproxy_config(bind: Target, servers: list[Target], maxconn: int = HAPROXY_MAXCONN) -> str:
    """An HAProxy config: one TCP frontend, round-robin over ``servers``, no health checks, no logging."""
    lines = [
        "global",
        f"    maxconn {maxconn}",
        "",
        "defaults",
        f"    mode {HAPROXY_MODE}",
        f"    maxconn {maxconn}",
        "    timeout connect 5s",
        "    timeout client 30s",
        "    timeout server 30s",
        "",
        "frontend bench",
        f"    bind {bind[0]}:{bind[1]}",
        "    default_backend members",
        "",
        "backend members",
        "    balance roundrobin",
    ]
    lines += [f"    server m{index} {address}:{port}" for index, (address, port) in enumerate(servers, 1)]
    return "\n".join(lines) + "\n"


def start_haproxy(lab: Lab, workdir: Path) -> subprocess.Popen[bytes]:
    """Write the HAProxy config into the workdir, check it, start HAProxy in p1 and wait until it listens."""
    path = workdir / "haproxy.cfg"
    path.write_text(
        haproxy_config(
            (lab.topo.host_ip(PROXY), HAPROXY_PORT), [(lab.topo.host_ip(name), HAPROXY_MEMBER_PORT) for name in MEMBERS]
        )
    )
    run(["haproxy", "-c", "-q", "-f", str(path)], check=True)
    proc = lab.start_process(PROXY, ["haproxy", "-db", "-f", str(path)], "haproxy.log")

    def listening() -> bool:
        """One poll of HAProxy's listening socket (failing fast if it died)."""
        if proc.poll() is not None:
            raise LabError(f"haproxy exited with {proc.returncode}; see {workdir / 'haproxy.log'}")
        return bool(lab.host_run(PROXY, ["ss", "-ltnH", f"sport = :{HAPROXY_PORT}"]).stdout.strip())

    wait_for(listening, 15.0, 0.05, "haproxy listening")
    return proc


def scenario_targets(topo: LabTopo, scenario: str) -> dict[str, Target]:
    """Client host to (address, port) for one scenario (client i goes straight to backend i when direct)."""
    if scenario == "direct":
        return {
            client: (topo.host_ip(topo.backends[index % len(topo.backends)]), DIRECT_PORT)
            for index, client in enumerate(topo.clients)
        }
    if scenario == "haproxy":
        return {client: (topo.host_ip(PROXY), HAPROXY_PORT) for client in topo.clients}
    vip = VIPS[scenario]
    return {client: (vip["address"], vip["port"]) for client in topo.clients}


def connections_run(
    lab: Lab, targets: dict[str, Target], count: int, concurrency: int, timeout: float
) -> dict[str, Any]:
    """One ``nlb-sdn-client connections`` per client host, all in parallel; their pooled summary."""
    procs = {
        name: lab.start_client(
            name,
            [
                "connections",
                address,
                "--port",
                port,
                "--count",
                count,
                "--concurrency",
                concurrency,
                "--timeout",
                timeout,
            ],
        )
        for name, (address, port) in targets.items()
    }
    return pool({name: lab.collect_client(proc, timeout + COLLECT_MARGIN) for name, proc in procs.items()})


def children_cpu_seconds() -> float:
    """User + system CPU time of this process's children that have ended and been waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def group_cpu_seconds(pids: list[int]) -> float | None:
    """User + system CPU time of several processes together (None when any is unknown or there are none)."""
    values = [cpu_seconds(pid) for pid in pids]
    return sum(v for v in values if v is not None) if values and None not in values else None


class CpuMeter:
    """CPU time of named processes and of the whole machine between ``start`` and ``stop``, in cores.

    ``groups`` names sets of processes counted together (the backends); ``children`` names the CPU time of this
    process's children that ended in between (the load clients, each waited for before ``stop``).
    """

    def __init__(
        self, pids: dict[str, int], groups: dict[str, list[int]] | None = None, children: str | None = None
    ) -> None:
        """Watch these processes (name to PID), process groups (name to PIDs) and, named ``children``, children."""
        self.pids = pids
        self.groups = groups or {}
        self.children = children
        self.before: dict[str, float | None] = {}
        self.started = 0.0

    def _sample(self) -> dict[str, float | None]:
        """CPU seconds so far of every watched process and group, the ended children, and the machine."""
        sample = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        sample.update({name: group_cpu_seconds(pids) for name, pids in self.groups.items()})
        if self.children is not None:
            sample[self.children] = children_cpu_seconds()
        return {**sample, "machine": machine_busy_seconds()}

    def start(self) -> None:
        """Take the first sample."""
        self.before, self.started = self._sample(), time.monotonic()

    def stop(self) -> dict[str, float | None]:
        """Cores used by each since ``start`` (``<name>_cores``); None where a sample failed."""
        after, elapsed = self._sample(), time.monotonic() - self.started
        return {
            f"{name}_cores": round((after[name] - start) / elapsed, 2)
            if start is not None and after[name] is not None and elapsed > 0
            else None
            for name, start in self.before.items()
        }


def measure_scenario(lab: Lab, scenario: str, settings: Settings, sections: set[str], cpu: CpuMeter) -> dict[str, Any]:
    """One scenario once: warm-up, then the download, the one-in-flight run and the loaded run (as asked)."""
    targets = scenario_targets(lab.topo, scenario)
    if settings.warmup_count:
        connections_run(lab, targets, settings.warmup_count, WARMUP_CONCURRENCY, settings.run_timeout)
    client, (address, port) = next(iter(targets.items()))
    result: dict[str, Any] = {"figures": {}}
    if "throughput" in sections:
        download = lab.run_client(
            client,
            [
                "download",
                address,
                "--port",
                port,
                "--bytes",
                settings.download_bytes,
                "--timeout",
                settings.download_timeout,
            ],
            timeout=settings.download_timeout + COLLECT_MARGIN,
        )
        result["download"] = download
        result["figures"]["download_mbps"] = download["mbps"]
    if "connections" in sections:
        idle = connections_run(lab, {client: (address, port)}, settings.idle_count, 1, settings.run_timeout)
        before = nlb_counters(lab)
        cpu.start()
        loaded = connections_run(lab, targets, settings.count, settings.concurrency, settings.run_timeout)
        cores = cpu.stop()
        after = nlb_counters(lab)
        packet_ins = after["packet_in"] - before["packet_in"]
        result.update(idle=idle, loaded=loaded, packet_ins=packet_ins)
        result["figures"].update(
            rate=loaded["rate"],
            connect_p50_ms=loaded["connect_p50_ms"],
            connect_p99_ms=loaded["connect_p99_ms"],
            idle_connect_p50_ms=idle["connect_p50_ms"],
            idle_connect_p99_ms=idle["connect_p99_ms"],
            packet_ins_per_connection=round(packet_ins / loaded["ok"], 4) if loaded["ok"] else None,
            **cores,
        )
    log(f"  {scenario}: {result['figures']}")
    return result


def scenario_sections(runs: dict[str, list[dict[str, Any]]], sections: set[str]) -> dict[str, Any]:
    """The connections and throughput sections: medians per scenario and their ratios."""
    found: dict[str, Any] = {}
    for section, keys in (("connections", CONNECTION_KEYS), ("throughput", THROUGHPUT_KEYS)):
        if section not in sections:
            continue
        figures = {scenario: [r["figures"] for r in runs[scenario]] for scenario in SCENARIOS}
        medians = {scenario: median_figures(figures[scenario], keys) for scenario in SCENARIOS}
        found[section] = {
            "scenarios": medians,
            "ratios": ratios(medians, keys),
            "spread": {scenario: spread(figures[scenario], keys) for scenario in SCENARIOS},
            "ratio_rounds": round_ratios(figures, [key for key in keys if key not in NO_RATIO]),
        }
    return found


def scenario_problems(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Failed connections and incomplete downloads of the connections and throughput rounds."""
    found = []
    for scenario, rounds in runs.items():
        for number, result in enumerate(rounds, 1):
            for kind in ("loaded", "idle"):
                if kind in result and result[kind]["errors"]:
                    found.append(
                        f"{scenario} round {number} {kind}: {result[kind]['errors']} failed connections "
                        f"{result[kind]['error_kinds']}"
                    )
            if "download" in result and not result["download"]["ok"]:
                found.append(
                    f"{scenario} round {number} download: {result['download']['bytes']} bytes, "
                    f"{result['download']['error']}"
                )
    return found


def complete(download: dict[str, Any], expected_sha: str) -> bool:
    """Whether a download finished with every byte and the pattern's checksum."""
    return bool(download.get("ok")) and download.get("sha256") == expected_sha


def apply_change(lab: Lab, change: str, subject: str) -> None:
    """Make one change to a subject's VIP through REST."""
    vip = VIPS[subject]
    base = f"/v1/vips/{vip['name']}/members"
    if change == "add":
        lab.rest("POST", base, {"name": SPARE, "address": lab.topo.host_ip(SPARE), "port": vip["member_port"]})
    elif change == "weight":
        lab.rest("PUT", f"{base}/h2", {"weight": 3})
    elif change == "drain":
        lab.rest("PUT", f"{base}/h3/state", {"state": "draining"})
    elif change == "remove":
        lab.rest("DELETE", f"{base}/h1")
    else:
        raise ValueError(f"unknown change {change!r}")


def disruption_trial(lab: Lab, change: str, settings: Settings, expected_sha: str) -> dict[str, dict[str, Any]]:
    """Long downloads through both VIPs from every client; the change applied to both VIPs meanwhile; outcomes."""
    duration = settings.disruption_bytes / settings.disruption_rate
    timeout = duration * 3 + 10.0
    targets = [f"{VIPS[s]['address']}:{VIPS[s]['port']}" for s in SUBJECTS]
    procs = {}
    for client in lab.topo.clients:
        cmd = [
            sys.executable,
            str(DOWNLOADS_SCRIPT),
            "--count",
            str(settings.disruption_downloads),
            "--bytes",
            str(settings.disruption_bytes),
            "--rate",
            str(settings.disruption_rate),
            "--timeout",
            str(timeout),
        ]
        for target in targets:
            cmd += ["--target", target]
        procs[client] = lab.start_process(client, cmd, f"disruption-{change}-{client}.json")
    time.sleep(duration * CHANGE_AT)
    changed_at = {}
    for subject in SUBJECTS:
        changed_at[subject] = time.time()
        apply_change(lab, change, subject)
    downloads: list[dict[str, Any]] = []
    for client, proc in procs.items():
        try:
            proc.wait(timeout + COLLECT_MARGIN)
        except subprocess.TimeoutExpired:
            log(f"  disruption {change}: downloads of {client} still running, stopped")
        lab.stop_process(proc)
        text = (lab.workdir / f"disruption-{change}-{client}.json").read_text().strip().splitlines()
        downloads += json.loads(text[-1])["downloads"] if text else []
    outcome: dict[str, dict[str, Any]] = {}
    for subject in SUBJECTS:
        target = targets[SUBJECTS.index(subject)]
        mine = [d for d in downloads if d["target"] == target]
        exposed = [d for d in mine if d.get("started", 0) <= changed_at[subject] <= d.get("ended", 0)]
        broken = [d for d in exposed if not complete(d.get("result", {}), expected_sha)]
        served: dict[str, int] = {}
        for d in exposed:
            member = str(d["result"].get("served_by"))
            served[member] = served.get(member, 0) + 1
        outcome[subject] = {
            "downloads": len(mine),
            "established_at_change": len(exposed),
            "broken": len(broken),
            "broken_share": broken_share(len(broken), len(exposed)),
            "failed_any_time": sum(1 for d in mine if not complete(d.get("result", {}), expected_sha)),
            "served_by_at_change": served,
            "errors": sorted({str(d.get("result", {}).get("error")) for d in broken}),
        }
    log(
        f"  disruption {change}: "
        + ", ".join(f"{s} {o['broken']}/{o['established_at_change']} broken" for s, o in outcome.items())
    )
    return outcome


def disruption_section(lab: Lab, settings: Settings) -> dict[str, Any]:
    """Every change in turn, each under its own long downloads; shares per change and in total."""
    expected_sha = pattern_sha256(settings.disruption_bytes)
    trials: dict[str, dict[str, Any]] = {subject: {} for subject in SUBJECTS}
    for change in CHANGES:
        for subject, outcome in disruption_trial(lab, change, settings, expected_sha).items():
            trials[subject][change] = outcome
    totals = {}
    for subject in SUBJECTS:
        broken = sum(t["broken"] for t in trials[subject].values())
        established = sum(t["established_at_change"] for t in trials[subject].values())
        totals[subject] = {
            "broken": broken,
            "established_at_change": established,
            "broken_share": broken_share(broken, established),
        }
    return {
        "trials": trials,
        "totals": totals,
        "final_members": {
            s: [m["name"] for m in lab.rest("GET", f"/v1/vips/{VIPS[s]['name']}/members")["members"]] for s in SUBJECTS
        },
    }


def vip_entries_in_switch(switch: str = "s1") -> int:
    """VIP service entries (table 0, priority 200) in a switch."""
    return sum("priority=200" in line for line in Lab.dump_flows(switch, table=0))


def standing_flows(switch: str = "s1") -> int:
    """Flows of a switch that are not per-connection or per-session entries (those come and go with traffic)."""
    kinds = [int(match.group(1), 16) >> KIND_SHIFT for line in Lab.dump_flows(switch) if (match := COOKIE.search(line))]
    return sum(kind not in (CookieKind.NAT, CookieKind.SESSION) for kind in kinds)


def many_vips(lab: Lab, count: int) -> dict[str, Any]:
    """Add ``count`` VIPs through REST, one POST each; time until the switch has all their entries; flows per switch."""
    flows_before = standing_flows()
    entries_before = vip_entries_in_switch()
    started = time.perf_counter()
    for index in range(count):
        lab.rest(
            "POST",
            "/v1/vips",
            {
                "name": f"scale-{index:03d}",
                "address": f"10.0.0.{MANY_VIP_BASE + index}",
                "port": 80,
                "members": lab.topo.members(80, list(MEMBERS)),
            },
            timeout=30.0,
        )
    posted_s = time.perf_counter() - started
    wait_for(
        lambda: vip_entries_in_switch() >= entries_before + count, APPLY_TIMEOUT, 0.05, f"{count} new VIP entries in s1"
    )
    apply_s = time.perf_counter() - started
    flows_after = standing_flows()
    log(
        f"  {count} VIPs: posted in {posted_s:.2f} s, in the switch after {apply_s:.2f} s, "
        f"flows {flows_before} -> {flows_after}"
    )
    return {
        "count": count,
        "posted_s": round(posted_s, 3),
        "apply_s": round(apply_s, 3),
        "per_vip_ms": round(apply_s * 1000 / count, 2),
        "flows_per_switch_before": flows_before,
        "flows_per_switch": flows_after,
        "flows_per_vip": round((flows_after - flows_before) / count, 2),
        "vips_in_config": lab.rest("GET", "/v1/vips")["count"],
    }


def profiled_run(lab: Lab, settings: Settings, path: Path) -> dict[str, Any]:
    """One more loaded run through the controller-dispatched VIP with py-spy on the controller; the profile's summary.

    A run of its own, after the measured rounds, so that the sampling never weighs on a measured figure.
    """
    assert lab.controller_proc is not None
    profile = ControllerProfile(
        lab.controller_proc.pid, path, settings.run_timeout + COLLECT_MARGIN, lab.workdir / "py-spy.log"
    )
    profile.start()
    loaded = connections_run(
        lab, scenario_targets(lab.topo, "vip_controller"), settings.count, settings.concurrency, settings.run_timeout
    )
    summary = profile.stop()
    summary.update(scenario="vip_controller", connections=loaded["ok"], rate=loaded["rate"])
    log(f"  controller profile: {summary.get('samples', summary.get('error'))} samples, {loaded['rate']:.0f} conn/s")
    return summary


def measure_rounds(
    lab: Lab, settings: Settings, sections: set[str], cpu: CpuMeter
) -> tuple[dict[str, Any], list[str], dict[str, list[dict[str, Any]]]]:
    """Every round of every scenario, in order direct, HAProxy, then the VIPs; (sections, problems, rounds)."""
    runs: dict[str, list[dict[str, Any]]] = {scenario: [] for scenario in ("direct", "haproxy", *SUBJECTS)}
    for number in range(1, settings.repeats + 1):
        log(f"round {number}/{settings.repeats}")
        for scenario in runs:
            runs[scenario].append(measure_scenario(lab, scenario, settings, sections, cpu))
    return scenario_sections(runs, sections), scenario_problems(runs), runs


def run_lab(
    settings: Settings,
    sections: set[str],
    workdir: Path,
    ofp_port: int,
    rest_port: int,
    lab_kind: LabKind = LabKind.MULTIHOP,
    profile_path: Path | None = None,
) -> tuple[dict[str, Any], list[str], dict[str, Any]]:
    """Bring up the lab once and run the asked lab sections in it; (sections, problems, raw: facts and rounds).

    With ``profile_path`` (and the connections section), a profiled run follows the rounds; its summary is
    ``raw["profile"]``.
    """
    topo = LAB_TOPOLOGIES[lab_kind](clients=settings.clients)
    config = lab_config(topo, [vip_entry(topo, subject) for subject in SUBJECTS])
    found: dict[str, Any] = {}
    problems: list[str] = []
    ports = sorted({HAPROXY_MEMBER_PORT, DIRECT_PORT, *(vip["member_port"] for vip in VIPS.values())})
    with Lab(topo, config, workdir=str(workdir), ofp_port=ofp_port, rest_port=rest_port, backend_ports=ports) as lab:
        lab.wait_switches_connected()
        haproxy = start_haproxy(lab, workdir)
        assert lab.controller_proc is not None
        cpu = CpuMeter(
            {"ovs": int(OVS_PID_FILE.read_text()), "controller": lab.controller_proc.pid, "haproxy": haproxy.pid},
            groups={"backends": [proc.pid for proc in lab.backend_procs.values()]},
            children="clients",
        )
        raw: dict[str, Any] = {
            "haproxy": run(["haproxy", "-v"]).stdout.splitlines()[0],
            "dispatch": {s: lab.rest("GET", f"/v1/vips/{VIPS[s]['name']}")["dispatch"] for s in SUBJECTS},
        }
        if sections & {"connections", "throughput"}:
            measured, failures, raw["rounds"] = measure_rounds(lab, settings, sections, cpu)
            found.update(measured)
            problems += failures
        if "connections" in sections and profile_path is not None:
            raw["profile"] = profiled_run(lab, settings, profile_path)
            if "error" in raw["profile"]:
                problems.append(f"controller profile: {raw['profile']['error']}")
        if "disruption" in sections:
            log("disruption")
            found["disruption"] = disruption_section(lab, settings)
            problems += [
                f"disruption {change} {subject}: {trial['failed_any_time']} incomplete downloads"
                for subject, trials in found["disruption"]["trials"].items()
                for change, trial in trials.items()
                if trial["failed_any_time"]
            ]
        if "scale" in sections:
            log("many VIPs")
            found["scale"] = {"vips": many_vips(lab, settings.vips)}
        raw["controller_stats_at_end"] = lab.rest("GET", "/v1/stats")
        lab.check_controller()
    return found, problems, raw
