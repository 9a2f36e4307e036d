"""L7 VIP benchmark: the request router's migrated connections against direct connections and HAProxy (mode http).

Run as root from the repository root: ``.venv/bin/python benchmarks/l7.py [--quick | --smoke]`` (wrap it in
``flock /tmp/nlb-mininet.lock``). One Mininet lab, one run, every figure beside its baselines:

- **TTFB** of ``GET /`` (small response), N sequential requests, one connection each, from ``c1``: through the L7
  VIP (router r1 decides by a path rule, migrates the connection to the member, the member answers), straight to a
  member, and through HAProxy; time from the connect call to the first response byte, p50/p99.
- **Requests/s under load** (every client in parallel, bounded by count and time) and, for the VIP, **migrations per
  second per router** (the controller's ``/v1/migrations`` counter ``migrated`` over the run; the lab has one
  router, so every connection goes through r1).
- **Download throughput** of one 200 MB download (``GET /bytes/N``, every byte checked, SHA-256 compared): migrated
  through the VIP, direct from the same member, and through HAProxy. Target: VIP / direct >= 0.9.

Writes the JSON report (``--out``, default ``benchmarks/results/l7.json``) and prints a Markdown table;
``benchmarks/README.md`` ("l7.py") explains the procedure. The exit status is 1 when a figure is missing or not
positive and finite.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import math
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python benchmarks/l7.py` from anywhere
    sys.path.insert(0, str(REPO))

from benchmarks.connections import pool  # noqa: E402 - after the path fix
from benchmarks.suite.lab import OVS_PID_FILE, CpuMeter  # noqa: E402
from benchmarks.suite.results import is_number, ratio  # noqa: E402
from nlb_sdn.lab import report as lab_report  # noqa: E402
from nlb_sdn.lab.backend import pattern_sha256  # noqa: E402
from nlb_sdn.lab.harness import Lab, LabError, run, wait_for  # noqa: E402
from nlb_sdn.lab.report import command_output  # noqa: E402
from topologies import SWITCH_OPTS, FabricTopo, lab_config  # noqa: E402

DEFAULT_OUT = REPO / "benchmarks" / "results" / "l7.json"
VIP = "10.0.0.100"
PORT = 80
MGMT_CONTROLLER = "10.99.0.254"
ROUTER = "r1"
ROUTER_STATUS = 9180
PROXY = "p1"
PROXY_OCTET = 99
PROXY_SWITCH_PORT = 20  # s1: clients 3..12, routers 13..
WEB_POOL = ("h1", "h2")  # GET / (every path but /bytes/)
BULK_POOL = ("h3",)  # GET /bytes/N
COLLECT_MARGIN = 30.0
WARMUP = 5
SCENARIOS = ("vip", "direct", "haproxy")
LABELS = {"vip": "L7 VIP (router, migrated)", "direct": "direct (no LB)", "haproxy": "HAProxy (mode http)"}
PAIRS = (("vip", "direct"), ("vip", "haproxy"), ("haproxy", "direct"))
FIGURES = ("ttfb_p50_ms", "ttfb_p99_ms", "requests_per_s", "download_mbps")
THROUGHPUT_TARGET = 0.9

TTFB_CLIENT = r"""
import json, math, socket, sys, time
host, port, count, budget = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
request = f"GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n".encode()
deadline = time.monotonic() + budget
ttfb, connect, served, errors = [], [], {}, {}
for _ in range(count):
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        break
    started = time.perf_counter()
    try:
        sock = socket.create_connection((host, port), timeout=min(5.0, remaining))
        try:
            connected = time.perf_counter()
            sock.sendall(request)
            data = sock.recv(65536)
            first = time.perf_counter()
            if not data:
                raise ConnectionResetError("no response")
            while len(data) < 65536:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        finally:
            sock.close()
        head = data.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
        by = next((line.split(":", 1)[1].strip() for line in head[1:] if line.lower().startswith("x-served-by:")), None)
        if not head[0].startswith("HTTP/1.1 200") or by is None:
            raise ValueError(head[0])
    except (OSError, ValueError) as exc:
        kind = type(exc).__name__
        errors[kind] = errors.get(kind, 0) + 1
        continue
    ttfb.append((first - started) * 1000)
    connect.append((connected - started) * 1000)
    served[by] = served.get(by, 0) + 1
def rank(values, q):
    ordered = sorted(values)
    return round(ordered[max(0, math.ceil(q * len(ordered)) - 1)], 3) if ordered else None
print(json.dumps({"ok": len(ttfb), "errors": sum(errors.values()), "error_kinds": errors, "served_by": served,
                  "ttfb_p50_ms": rank(ttfb, 0.5), "ttfb_p99_ms": rank(ttfb, 0.99), "ttfb_max_ms": rank(ttfb, 1.0),
                  "connect_p50_ms": rank(connect, 0.5), "connect_p99_ms": rank(connect, 0.99)}))
"""


@dataclass(frozen=True)
class Settings:
    """The load of one mode; every scenario runs exactly this."""

    repeats: int  # rounds (each: direct, VIP, HAProxy); figures are medians over them
    ttfb_count: int  # sequential GET / from c1, one connection each
    ttfb_budget: float  # bound on that series, in seconds
    clients: int  # client hosts loading in parallel
    count: int  # connections per client in the loaded run
    concurrency: int  # connections in flight per client in the loaded run
    run_timeout: float  # bound on every loaded run, in seconds
    download_bytes: int  # the download from c1
    download_timeout: float  # its bound, in seconds


FULL = Settings(
    repeats=3,
    ttfb_count=300,
    ttfb_budget=30.0,
    clients=3,
    count=300,
    concurrency=8,
    run_timeout=20.0,
    download_bytes=200_000_000,
    download_timeout=30.0,
)
QUICK = Settings(
    repeats=1,
    ttfb_count=100,
    ttfb_budget=15.0,
    clients=3,
    count=100,
    concurrency=8,
    run_timeout=10.0,
    download_bytes=50_000_000,
    download_timeout=15.0,
)
SMOKE = Settings(
    repeats=1,
    ttfb_count=10,
    ttfb_budget=5.0,
    clients=2,
    count=10,
    concurrency=2,
    run_timeout=5.0,
    download_bytes=2_000_000,
    download_timeout=5.0,
)
MODES = {"full": FULL, "quick": QUICK, "smoke": SMOKE}


def log(message: str) -> None:
    """Progress on stderr."""
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    """An unused TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class L7BenchTopo(FabricTopo):
    """FabricTopo with clients on s1, members h1..h3 on s2, router r1 on s1 and the HAProxy host p1 on s1 too."""

    def __init__(self, clients: int) -> None:
        """Clients as asked, three members, one router, management network, trunks sized for the MPLS label."""
        super().__init__(clients=clients, backends=3, mgmt=True, trunk_mtu=1504, routers=1)

    def build(self) -> None:
        """FabricTopo's switches and hosts, then p1 (10.0.0.99) on s1 beside the router."""
        super().build()
        self.add_lab_host(PROXY, PROXY_OCTET, "s1", PROXY_SWITCH_PORT)


def l7_vip(topo: FabricTopo) -> dict[str, Any]:
    """VIP web in mode l7 via r1: ``/bytes/`` to pool bulk (h3), every other path to pool web (h1, h2)."""
    return {
        "name": "web",
        "address": VIP,
        "port": PORT,
        "mode": "l7",
        "routers": [ROUTER],
        "members": topo.members(PORT),
        "pools": [{"name": "web", "members": list(WEB_POOL)}, {"name": "bulk", "members": list(BULK_POOL)}],
        "rules": [
            {"match": {"path_prefix": "/bytes/"}, "pool": "bulk"},
            {"match": {"path_prefix": "/"}, "pool": "web"},
        ],
    }


def haproxy_http_config(
    bind: tuple[str, int], web: list[tuple[str, int]], bulk: list[tuple[str, int]], maxconn: int = 4096
) -> str:
    """HAProxy in ``mode http`` with the VIP's rules: an ACL on path prefix ``/bytes/`` to backend bulk, the rest to
    backend web (round robin); no health checks, no logging (as the suite's ``haproxy_config``)."""
    lines = [
        "global",
        f"    maxconn {maxconn}",
        "",
        "defaults",
        "    mode http",
        f"    maxconn {maxconn}",
        "    timeout connect 5s",
        "    timeout client 30s",
        "    timeout server 30s",
        "",
        "frontend l7",
        f"    bind {bind[0]}:{bind[1]}",
        "    acl is_bulk path_beg /bytes/",
        "    use_backend bulk if is_bulk",
        "    default_backend web",
        "",
    ]
    for name, servers in (("web", web), ("bulk", bulk)):
        lines += [f"backend {name}", "    balance roundrobin"]
        lines += [f"    server m{index} {address}:{port}" for index, (address, port) in enumerate(servers, 1)]
        lines.append("")
    return "\n".join(lines)


def start_haproxy(lab: Lab, workdir: Path) -> subprocess.Popen[bytes]:
    """Write and check the config, start HAProxy in p1 and wait until it listens (as the suite's start_haproxy)."""
    path = workdir / "haproxy.cfg"
    path.write_text(
        haproxy_http_config(
            (lab.topo.host_ip(PROXY), PORT),
            [(lab.topo.host_ip(name), PORT) for name in WEB_POOL],
            [(lab.topo.host_ip(name), PORT) for name in BULK_POOL],
        )
    )
    run(["haproxy", "-c", "-q", "-f", str(path)], check=True)
    proc = lab.start_process(PROXY, ["haproxy", "-db", "-f", str(path)], "haproxy.log")

    def listening() -> bool:
        """One poll of HAProxy's listening socket (failing fast if it died)."""
        if proc.poll() is not None:
            raise LabError(f"haproxy exited with {proc.returncode}; see {workdir / 'haproxy.log'}")
        return bool(lab.host_run(PROXY, ["ss", "-ltnH", f"sport = :{PORT}"]).stdout.strip())

    wait_for(listening, 15.0, 0.05, "haproxy listening")
    return proc


def targets_of(topo: FabricTopo, scenario: str) -> dict[str, tuple[str, str]]:
    """Per client host, (address for GET /, address for the download): the VIP, HAProxy, or members directly."""
    if scenario == "vip":
        return {client: (VIP, VIP) for client in topo.clients}
    if scenario == "haproxy":
        proxy = topo.host_ip(PROXY)
        return {client: (proxy, proxy) for client in topo.clients}
    bulk = topo.host_ip(BULK_POOL[0])
    return {client: (topo.host_ip(WEB_POOL[index % len(WEB_POOL)]), bulk) for index, client in enumerate(topo.clients)}


def migration_counters(lab: Lab) -> dict[str, int]:
    """The controller's migration counters (``GET /v1/migrations``)."""
    return dict(lab.rest("GET", "/v1/migrations?limit=1")["counters"])


def counter_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """``after - before`` for every counter that moved."""
    return {
        key: after.get(key, 0) - before.get(key, 0)
        for key in sorted(set(before) | set(after))
        if after.get(key, 0) != before.get(key, 0)
    }


def settled_delta(lab: Lab, before: dict[str, int], expected: int, timeout: float = 10.0) -> dict[str, int]:
    """The migration counters' delta once ``expected`` outcomes (migrated + proxied + reset) were reported, or
    whatever arrived within ``timeout`` s (the routers report after the member answered)."""
    deadline = time.monotonic() + timeout
    while True:
        delta = counter_delta(before, migration_counters(lab))
        done = sum(delta.get(key, 0) for key in ("migrated", "proxied", "reset"))
        if done >= expected or time.monotonic() >= deadline:
            return delta
        time.sleep(0.1)


def rank(values: list[float], q: float) -> float | None:
    """The nearest-rank ``q`` quantile of ``values`` (None when empty)."""
    ordered = sorted(values)
    return round(ordered[max(0, math.ceil(q * len(ordered)) - 1)], 3) if ordered else None


def migration_durations(lab: Lab, last: int) -> list[float]:
    """``duration_ms`` of the last ``last`` migrated reports in the controller's log (dump to the host's hand-off
    reply and the report, commit and barrier included; the log keeps the newest 512 records, commits included)."""
    records = lab.rest("GET", "/v1/migrations")["migrations"]
    return [m["duration_ms"] for m in records if m.get("outcome") == "migrated" and is_number(m.get("duration_ms"))][
        -last:
    ]


def router_stats(lab: Lab) -> dict[str, Any]:
    """r1's counters from its status port."""
    out = lab.host_run(
        ROUTER, [sys.executable, "-m", "nlb_sdn.router.cli", "stats", "--status", f"127.0.0.1:{ROUTER_STATUS}"]
    )
    return json.loads(out.stdout) if out.returncode == 0 else {"error": out.stderr.strip()[-500:]}


def ttfb_run(lab: Lab, address: str, count: int, budget: float) -> dict[str, Any]:
    """``count`` sequential GET / from c1 to ``address`` (one connection each); the TTFB summary."""
    result = lab.host_run(
        "c1",
        [sys.executable, "-c", TTFB_CLIENT, address, str(PORT), str(count), str(budget)],
        timeout=budget + COLLECT_MARGIN,
    )
    if result.returncode != 0:
        raise LabError(f"TTFB client failed: {result.stderr.strip()[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def loaded_run(lab: Lab, targets: dict[str, str], settings: Settings) -> dict[str, Any]:
    """One ``nlb-sdn-client connections`` per client host, all in parallel; their pooled summary."""
    procs = {
        name: lab.start_client(
            name,
            [
                "connections",
                address,
                "--port",
                PORT,
                "--count",
                settings.count,
                "--concurrency",
                settings.concurrency,
                "--timeout",
                settings.run_timeout,
            ],
        )
        for name, address in targets.items()
    }
    return pool({name: lab.collect_client(proc, settings.run_timeout + COLLECT_MARGIN) for name, proc in procs.items()})


def measure(lab: Lab, scenario: str, settings: Settings, cpu: CpuMeter, expected_sha: str) -> dict[str, Any]:
    """One scenario once: warm-up, TTFB series, loaded run, download; the figures and what backs them."""
    targets = targets_of(lab.topo, scenario)
    web, bulk = targets["c1"]
    before = migration_counters(lab)
    ttfb_run(lab, web, WARMUP, 10.0)
    if scenario == "vip":
        settled_delta(lab, before, WARMUP)  # so that no warm-up report lands in the next delta
    found: dict[str, Any] = {"figures": {}, "problems": []}
    figures = found["figures"]

    before = migration_counters(lab)
    ttfb = ttfb_run(lab, web, settings.ttfb_count, settings.ttfb_budget)
    found["ttfb"] = ttfb
    figures.update(ttfb_p50_ms=ttfb["ttfb_p50_ms"], ttfb_p99_ms=ttfb["ttfb_p99_ms"])
    if ttfb["errors"] or ttfb["ok"] < settings.ttfb_count:
        found["problems"].append(f"{scenario} TTFB: {ttfb['ok']} of {settings.ttfb_count} ok, {ttfb['error_kinds']}")
    if scenario == "vip":
        found["ttfb_migrations"] = delta = settled_delta(lab, before, ttfb["ok"])
        durations = migration_durations(lab, ttfb["ok"])
        found["ttfb_migration_ms"] = {
            "samples": len(durations),
            "p50": rank(durations, 0.5),
            "p99": rank(durations, 0.99),
        }
        figures.update(migration_p50_ms=rank(durations, 0.5), migration_p99_ms=rank(durations, 0.99))
        if delta.get("migrated", 0) != ttfb["ok"]:
            found["problems"].append(f"vip TTFB: {delta.get('migrated', 0)} of {ttfb['ok']} migrated ({delta})")

    before = migration_counters(lab)
    router_before = router_stats(lab) if scenario == "vip" else {}
    cpu.start()
    loaded = loaded_run(lab, {client: pair[0] for client, pair in targets.items()}, settings)
    found["cpu_loaded"] = cpu.stop()
    found["loaded"] = loaded
    figures["requests_per_s"] = loaded["rate"]
    expected = settings.count * len(targets)
    if loaded["errors"] or loaded["ok"] < expected:
        found["problems"].append(f"{scenario} loaded: {loaded['ok']} of {expected} ok, {loaded['error_kinds']}")
    if scenario == "vip":
        delta = settled_delta(lab, before, loaded["ok"])
        found["loaded_migrations"] = delta
        found["router_migrated"] = router_stats(lab).get("migrated", 0) - router_before.get("migrated", 0)
        figures["migrations_per_s"] = (
            round(delta.get("migrated", 0) / loaded["elapsed_s"], 1) if loaded["elapsed_s"] else None
        )
        if delta.get("migrated", 0) != loaded["ok"]:
            found["problems"].append(f"vip loaded: {delta.get('migrated', 0)} of {loaded['ok']} migrated ({delta})")

    before = migration_counters(lab)
    download = lab.run_client(
        "c1",
        ["download", bulk, "--port", PORT, "--bytes", settings.download_bytes, "--timeout", settings.download_timeout],
        timeout=settings.download_timeout + COLLECT_MARGIN,
    )
    found["download"] = download
    verified = download["ok"] and download["sha256"] == expected_sha and download["served_by"] == BULK_POOL[0]
    found["download_verified"] = verified
    figures["download_mbps"] = download["mbps"] if verified else None
    if not verified:
        found["problems"].append(
            f"{scenario} download: {download['bytes']} bytes from {download['served_by']}, {download.get('error')}"
        )
    if scenario == "vip":
        found["download_migrations"] = delta = settled_delta(lab, before, 1)
        if delta.get("migrated", 0) != 1:
            found["problems"].append(f"vip download not migrated ({delta})")
    log(f"  {scenario}: {figures}")
    return found


def medians(rounds: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, float | None]:
    """Per key, the median over the rounds that produced a finite value."""
    result: dict[str, float | None] = {}
    for key in keys:
        values = [r["figures"].get(key) for r in rounds if is_number(r["figures"].get(key))]
        result[key] = round(statistics.median(values), 3) if values else None
    return result


def summarise(runs: dict[str, list[dict[str, Any]]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Median figures per scenario, and the ratios of each pair (migrations/s against the baselines' requests/s)."""
    extra = ("migrations_per_s", "migration_p50_ms", "migration_p99_ms")
    figures = {
        scenario: medians(runs[scenario], FIGURES + (extra if scenario == "vip" else ())) for scenario in SCENARIOS
    }
    ratios: dict[str, Any] = {}
    for top, bottom in PAIRS:
        pair = {key: ratio(figures[top][key], figures[bottom][key]) for key in FIGURES}
        if top == "vip":
            pair["migrations_per_s"] = ratio(figures["vip"]["migrations_per_s"], figures[bottom]["requests_per_s"])
        ratios[f"{top}/{bottom}"] = pair
    return figures, ratios


def sanity_problems(report: dict[str, Any]) -> list[str]:
    """Every figure and ratio that is missing or not positive and finite."""
    found = []
    for group in ("figures", "ratios"):
        for name, values in report.get(group, {}).items():
            for key, value in values.items():
                if not (is_number(value) and value > 0):
                    found.append(f"{group}.{name}.{key}: {value!r}")
    return found


def run_lab(settings: Settings, workdir: Path) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]:
    """Bring up the L7 lab once and run every round in it; (rounds per scenario, raw facts)."""
    key_file = workdir / "hl.key"
    workdir.mkdir(parents=True, exist_ok=True)
    key_file.write_text(secrets.token_hex(32))
    hl_port, rest_port = free_port(), free_port()
    topo = L7BenchTopo(clients=settings.clients)
    config = lab_config(
        topo,
        [l7_vip(topo)],
        rest={"host": "0.0.0.0", "allow_unauthenticated": True},  # the routers, in lab namespaces, reach it
        health={"enabled": True, "listen_host": "0.0.0.0", "listen_port": hl_port, "key_file": str(key_file)},
    )
    expected_sha = pattern_sha256(settings.download_bytes)
    runs: dict[str, list[dict[str, Any]]] = {scenario: [] for scenario in ("direct", "vip", "haproxy")}
    with Lab(topo, config, workdir=str(workdir / "lab"), ofp_port=free_port(), rest_port=rest_port) as lab:
        lab.wait_switches_connected()
        for name in topo.backends:
            lab.stop_backend(name, PORT)
            lab.start_backend(name, PORT, handoff_socket=lab.handoff_socket(name))
            lab.start_agent(
                name,
                {
                    "host_id": name,
                    "key_file": lab.host_key_file(name, key_file),
                    "controllers": [f"{MGMT_CONTROLLER}:{hl_port}"],
                    "listen": f"{topo.mgmt_ip(name)}:9101",
                    "migration": {"listen": "0.0.0.0:7001", "handoff_socket": lab.handoff_socket(name)},
                },
            )
        router = lab.start_router(
            ROUTER,
            [
                "--vip",
                "web",
                "--controller",
                f"http://{MGMT_CONTROLLER}:{rest_port}",
                "--router-name",
                ROUTER,
            ],
            status_port=ROUTER_STATUS,
        )
        haproxy = start_haproxy(lab, lab.workdir)
        assert lab.controller_proc is not None
        cpu = CpuMeter(
            {
                "ovs": int(OVS_PID_FILE.read_text()),
                "controller": lab.controller_proc.pid,
                "router": router.pid,
                "haproxy": haproxy.pid,
            }
        )
        for number in range(1, settings.repeats + 1):
            log(f"round {number}/{settings.repeats}")
            for scenario in runs:
                runs[scenario].append(measure(lab, scenario, settings, cpu, expected_sha))
        raw = {
            "haproxy": run(["haproxy", "-v"]).stdout.splitlines()[0],
            "haproxy_config": (lab.workdir / "haproxy.cfg").read_text(),
            "migrations_at_end": migration_counters(lab),
            "router_stats_at_end": router_stats(lab),
            "controller_stats_at_end": lab.rest("GET", "/v1/stats"),
        }
        lab.check_controller()
        if router.poll() is not None:
            raise LabError(f"router {ROUTER} exited with {router.returncode}")
    return runs, raw


def _cell(value: Any, fmt: str) -> str:
    """A formatted number, or a dash."""
    return fmt.format(value) if is_number(value) else "-"


def markdown(report: dict[str, Any]) -> str:
    """The figures beside their baselines and ratios, the target, the CPU of the loaded runs and any problems."""
    settings, env = report["settings"], report["environment"]
    figures, ratios = report.get("figures", {}), report.get("ratios", {})
    rows = [
        ("ttfb_p50_ms", f"TTFB p50 ms, GET / ({settings['ttfb_count']} sequential, 1 connection each)", "{:.2f}"),
        ("ttfb_p99_ms", "TTFB p99 ms, same requests", "{:.2f}"),
        (
            "migration_p50_ms",
            "of which migration p50 ms (router's reports: dump to hand-off, commit included)",
            "{:.2f}",
        ),
        ("migration_p99_ms", "of which migration p99 ms, same reports", "{:.2f}"),
        (
            "requests_per_s",
            f"requests/s, {settings['clients']} clients x {settings['concurrency']} in flight",
            "{:.0f}",
        ),
        ("migrations_per_s", "migrations/s per router, same load (baselines: their requests/s)", "{:.0f}"),
        ("download_mbps", f"download Mbit/s ({settings['download_bytes'] // 1_000_000} MB, 1 connection)", "{:.0f}"),
    ]
    header = ["figure", *(LABELS[s] for s in SCENARIOS), "VIP/direct", "VIP/HAProxy", "HAProxy/direct"]
    lines = [
        f"nlb_sdn L7 benchmark, {report['mode']} mode, {env.get('date', '?')}, commit "
        f"`{str(env.get('git_commit', ''))[:10]}`{' (dirty tree)' if env.get('git_dirty') else ''}, "
        f"{report.get('duration_s', '?')} s; medians of {settings['repeats']} round(s); load average "
        f"{env.get('loadavg_at_start', [0])[0]:.2f} at start, {report.get('loadavg_at_end', [0])[0]:.2f} at end",
        "",
        "| " + " | ".join(header) + " |",
        "|---" + "|---:" * (len(header) - 1) + "|",
    ]
    for key, label, fmt in rows:
        if key.startswith("migration_"):
            cells = [_cell(figures.get("vip", {}).get(key), fmt), "-", "-"]
        elif key == "migrations_per_s":
            cells = [
                _cell(figures.get("vip", {}).get(key), fmt),
                _cell(figures.get("direct", {}).get("requests_per_s"), fmt),
                _cell(figures.get("haproxy", {}).get("requests_per_s"), fmt),
            ]
        else:
            cells = [_cell(figures.get(s, {}).get(key), fmt) for s in SCENARIOS]
        cells += [_cell(ratios.get(f"{a}/{b}", {}).get(key), "{:.2f}") for a, b in PAIRS]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "| target | goal | measured | met |", "|---|---|---:|---|"]
    for item in report.get("targets", []):
        verdict = {True: "yes", False: "**no**", None: "-"}[item["met"]]
        lines.append(f"| {item['target']} | {item['goal']} | {_cell(item['value'], '{:.3f}')} | {verdict} |")
    cpu = report.get("cpu_loaded", {})
    if cpu:
        names = ("ovs", "controller", "router", "haproxy", "machine")
        lines += [
            "",
            "| CPU cores during the loaded run | " + " | ".join(names) + " |",
            "|---" + "|---:" * len(names) + "|",
        ]
        for scenario in SCENARIOS:
            lines.append(
                f"| {LABELS[scenario]} | "
                + " | ".join(_cell(cpu.get(scenario, {}).get(f"{n}_cores"), "{:.2f}") for n in names)
                + " |"
            )
    if report.get("problems"):
        lines += ["", "Problems:", *(f"- {line}" for line in report["problems"])]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_const", const="quick", dest="mode", help="one round, smaller counts")
    size.add_argument(
        "--smoke",
        action="store_const",
        const="smoke",
        dest="mode",
        help="tiny counts, for CI: checks that everything works (well under a minute)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON report (default {DEFAULT_OUT})")
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
    """Run the benchmark, write the JSON, print the Markdown; exit 1 if a figure is not sane."""
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("benchmarks/l7.py needs root (Mininet and Open vSwitch)", file=sys.stderr)
        return 2
    settings = MODES[args.mode]
    started = time.monotonic()
    report: dict[str, Any] = {
        "benchmark": "l7",
        "mode": args.mode,
        "environment": lab_report.environment(
            ovs_version=command_output(["ovs-vsctl", "--timeout=5", "get", "Open_vSwitch", ".", "ovs_version"]).strip(
                '"'
            ),
            os_ken=importlib.metadata.version("os-ken"),
            mininet=importlib.metadata.version("mininet"),
            haproxy=command_output(["haproxy", "-v"]).split("\n", 1)[0],
        ),
        "settings": {
            **asdict(settings),
            "topology": "fabric (L7BenchTopo: r1 and p1 on s1, h1..h3 on s2)",
            "datapath": SWITCH_OPTS["datapath"],
            "tx_offload": "off",
            "routers": 1,
            "rules": {"/bytes/": list(BULK_POOL), "/": list(WEB_POOL)},
        },
    }
    workdir_cm = (
        contextlib.nullcontext(str(args.workdir))
        if args.workdir is not None
        else tempfile.TemporaryDirectory(prefix="nlb-l7-")
    )
    with workdir_cm as workdir_name:
        runs, raw = run_lab(settings, Path(workdir_name))
    report["figures"], report["ratios"] = summarise(runs)
    value = report["ratios"]["vip/direct"]["download_mbps"]
    report["targets"] = [
        {
            "target": "migrated download throughput / direct",
            "goal": f">= {THROUGHPUT_TARGET}",
            "value": value,
            "met": value >= THROUGHPUT_TARGET if is_number(value) else None,
        }
    ]
    report["cpu_loaded"] = {
        scenario: {
            key: statistics.median(vals)
            if (vals := [r["cpu_loaded"][key] for r in rounds if is_number(r["cpu_loaded"].get(key))])
            else None
            for key in rounds[0]["cpu_loaded"]
        }
        for scenario, rounds in runs.items()
    }
    report["duration_s"] = round(time.monotonic() - started, 1)
    report["loadavg_at_end"] = os.getloadavg()
    insane = sanity_problems(report)
    report["problems"] = [p for rounds in runs.values() for r in rounds for p in r["problems"]] + [
        f"not a sane figure: {line}" for line in insane
    ]
    report["raw"] = {**raw, "rounds": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    table = markdown(report)
    args.out.with_suffix(".md").write_text(table)
    print(table)
    print(f"report: {args.out} (+ .md)")
    return 1 if insane else 0


if __name__ == "__main__":
    sys.exit(main())
