"""Benchmark: H&L controller costs: allotment recomputation, agent messages per second, memory per 1,000 endpoints.

Run from the repository root, as any user (no Mininet, no switch):
``.venv/bin/python benchmarks/health.py [--quick] [--out benchmarks/results/health.json]``.
Everything runs in-process against the controller core (``LoadBalancer``), fed real HMAC-signed agent messages built
in advance; the memory figures come from child processes of this script, one per configuration.
``benchmarks/README.md`` explains each figure.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import hmac
import importlib.metadata
import ipaddress
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import msgpack

from nlb_sdn.config import Config, parse_config
from nlb_sdn.core.balancer import LoadBalancer
from nlb_sdn.health.allotment import compute_allotment
from nlb_sdn.health.protocol import UDP_MAX_SIZE, Verifier
from nlb_sdn.health.table import HLTable, Row
from nlb_sdn.lab import report as lab_report
from nlb_sdn.signed import MAC_SIZE, encode

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "benchmarks" / "results" / "health.json"
KEY = b"benchmark-hl-key-0123456789abcdef"
FORGED_KEY = b"an-attackers-guess-0123456789abc"
HOST_BASE = ipaddress.IPv4Address("10.1.0.1")
VIP_BASE = ipaddress.IPv4Address("10.0.0.100")
VPORT = 80
PPORT = 8080
AGENT_PORT = 9101
MEMBERS_PER_VIP = 100  # part 3: VIPs of 100 agent members each
RATE_HOSTS = 100  # part 2: reporting hosts, one VIP with one member per host
START = 0.0  # LoadBalancer created
SYNC_AT = 0.5  # every agent's first heartbeat and snapshot
READY_AT = 2.0  # past the warm-up gate; every measured message carries this time
DURATION_S = 2.0  # the default allotment duration (2000 ms): a pick later than this recomputes
WARMUP_CALLS = 5
MEMORY_CHILD_TIMEOUT = 900.0

ALLOTMENT_ROWS: list[tuple[str, str]] = [
    ("sorted", "baseline: `sorted()` of the candidates by name"),
    ("compute_allotment", "`compute_allotment`"),
    ("allotment_for", "`HealthHandler.allotment_for` (candidates from the cache + compute)"),
    ("pick_refresh", "`HealthHandler.pick`, allotment expired (recompute + install + pick)"),
    ("pick_steady", "`HealthHandler.pick`, allotment valid (spend only)"),
]
PHASES: list[tuple[str, str]] = [
    ("heartbeat", "heartbeat"),
    ("row_change_load", "row_change, load only"),
    ("row_change_health", "row_change, health flip, VIP with a live allotment"),
    ("forged", "forged heartbeat (bad MAC), dropped"),
]
BASELINES = ("verify", "decode", "hmac")


@dataclass(frozen=True)
class Settings:
    """The work of one benchmark mode."""

    allotment_sizes: tuple[int, ...]  # endpoints (agent members of one VIP, one host each) for part 1
    budget_s: float  # time bound of one part 1 measurement, once min_samples are in
    min_samples: int  # part 1 calls timed at least (whatever the budget)
    max_samples: int  # part 1 calls timed at most
    repeats: int  # part 2: fresh LoadBalancers; message rates are medians over these
    rounds: int  # part 2: messages per host and phase (RATE_HOSTS hosts)
    memory_sizes: tuple[int, ...]  # part 3: endpoints (one row per host) with members carrying their MAC
    memory_fabric_size: int  # part 3: endpoints with a fabric listing every host


FULL = Settings(
    allotment_sizes=(10, 100, 1000),
    budget_s=1.0,
    min_samples=300,
    max_samples=20_000,
    repeats=5,
    rounds=100,
    memory_sizes=(1000, 10_000),
    memory_fabric_size=1000,
)
QUICK = Settings(
    allotment_sizes=(10, 100, 1000),
    budget_s=0.1,
    min_samples=20,
    max_samples=2000,
    repeats=1,
    rounds=10,
    memory_sizes=(1000,),
    memory_fabric_size=1000,
)


def log(message: str) -> None:
    """Progress on stderr (stdout carries the tables)."""
    print(message, file=sys.stderr, flush=True)


class Problems:
    """Failed sanity checks, kept for the report instead of stopping the run."""

    def __init__(self) -> None:
        self.found: list[str] = []

    def check(self, ok: bool, message: str) -> None:
        """Record ``message`` unless ``ok``."""
        if not ok:
            self.found.append(message)
            log(f"  warning: {message}")


# The model: hosts, rows, config, agents.


def host_ip(index: int) -> str:
    """The address of host ``index`` (also its only endpoint's pip)."""
    return str(HOST_BASE + index)


def host_mac(index: int) -> str:
    """A locally administered MAC for host ``index``."""
    return "02:00:" + ":".join(f"{b:02x}" for b in index.to_bytes(4, "big"))


def vip_address(number: int) -> str:
    """The address of VIP ``number``."""
    return str(VIP_BASE + number)


def agent_row(index: int, vip: str) -> Row:
    """Host ``index``'s row: capacity 100-400, load 0-159 (some full), every tenth host failed."""
    return Row(
        vip=vip,
        vport=VPORT,
        pip=host_ip(index),
        pport=PPORT,
        health="failed" if index % 10 == 9 else "ok",
        load=float((index * 37) % 160),
        capacity=100.0 + 50.0 * (index % 7),
        target="active",
        current="active",
    )


def config_data(endpoints: int, members_per_vip: int, fabric_hosts: bool) -> dict[str, Any]:
    """Plain config data: VIPs of ``members_per_vip`` agent members, one per host; the fabric lists the hosts (or the
    members carry their MAC and the fabric only its switch)."""
    vips = []
    for number in range(math.ceil(endpoints / members_per_vip)):
        first = number * members_per_vip
        members = [
            {
                "name": f"m{i:05d}",
                "address": host_ip(i),
                "port": PPORT,
                "health": "agent",
                **({} if fabric_hosts else {"mac": host_mac(i)}),
            }
            for i in range(first, min(endpoints, first + members_per_vip))
        ]
        vips.append({"name": f"vip{number}", "address": vip_address(number), "port": VPORT, "members": members})
    hosts = (
        [
            {"name": f"h{i:05d}", "ip": host_ip(i), "mac": host_mac(i), "switch": "s1", "port": i + 1}
            for i in range(endpoints)
        ]
        if fabric_hosts
        else []
    )
    return {
        "controller": {"health": {"enabled": True, "key_file": "(benchmark: the key is in memory)"}},
        "vips": vips,
        "fabric": {"switches": [{"name": "s1", "dpid": 1}], "hosts": hosts},
    }


def vip_of(index: int, members_per_vip: int) -> str:
    """The VIP address host ``index``'s row belongs to."""
    return vip_address(index // members_per_vip)


class Agent:
    """One simulated host agent: its H&L table (one row) and the signed datagrams it would send, in seq order."""

    def __init__(self, index: int, vip: str) -> None:
        self.host_id = f"h{index:05d}"
        self.addr = (host_ip(index), AGENT_PORT)
        self.table = HLTable([agent_row(index, vip)])
        self.seq = 0

    def _sign(self, type: str, body: dict[str, Any], ts: float, key: bytes = KEY) -> bytes:
        """The next datagram of this agent."""
        self.seq += 1
        return encode(key, type, self.host_id, self.seq, ts, body)

    def heartbeat(self, ts: float, key: bytes = KEY) -> bytes:
        """A heartbeat with the table's checksum (``key`` other than KEY: a forgery)."""
        return self._sign(
            "heartbeat",
            {"host_id": self.host_id, "checksum": self.table.checksum, "row_count": len(self.table), "period_ms": 1000},
            ts,
            key,
        )

    def snapshot(self, ts: float) -> bytes:
        """The whole table."""
        return self._sign(
            "snapshot",
            {
                "host_id": self.host_id,
                "rows": [r.to_dict() for r in self.table.rows()],
                "checksum": self.table.checksum,
            },
            ts,
        )

    def change(self, ts: float, **fields: Any) -> bytes:
        """A row change of the only row (chained onto the previous checksum, like the real agent's)."""
        change = self.table.upsert(replace(self.table.rows()[0], **fields))
        assert change is not None, "a row change must change the row"
        return self._sign("row_change", change.body(self.host_id), ts)

    @property
    def row(self) -> Row:
        """The only row."""
        return self.table.rows()[0]


Datagrams = list[tuple[tuple[str, int], bytes]]


def sync_datagrams(agents: list[Agent], ts: float) -> Datagrams:
    """What every agent sends first: a heartbeat (the controller answers get_snapshot), then its snapshot."""
    datagrams: Datagrams = []
    for agent in agents:
        datagrams += [(agent.addr, agent.heartbeat(ts)), (agent.addr, agent.snapshot(ts))]
    return datagrams


def sync(lb: LoadBalancer, datagrams: Datagrams, now: float) -> int:
    """Feed the first datagrams through ``handle_datagram``; the number of replies."""
    return sum(len(lb.handle_datagram(data, addr, now).datagrams) for addr, data in datagrams)


def has_mac_of(lb: LoadBalancer) -> Callable[[Any], bool]:
    """The core's own MAC predicate, the one the classifier hands to the H&L handler."""
    return lb.ctx.fabric.has_mac


# Statistics.


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of ``values``."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1))]


def summary_us(samples_ns: list[int]) -> dict[str, Any]:
    """Median, p99, mean and max of call times, in microseconds."""
    values = [s / 1000.0 for s in samples_ns]
    return {
        "samples": len(values),
        "median_us": round(statistics.median(values), 3),
        "p99_us": round(percentile(values, 0.99), 3),
        "mean_us": round(statistics.fmean(values), 3),
        "max_us": round(max(values), 3),
    }


def time_calls(fn: Callable[[], Any], settings: Settings) -> list[int]:
    """Call times in ns: after a warm-up, at least ``min_samples`` calls, then until the budget or ``max_samples``."""
    for _ in range(WARMUP_CALLS):
        fn()
    samples: list[int] = []
    clock = time.perf_counter_ns
    deadline = time.perf_counter() + settings.budget_s
    while len(samples) < settings.max_samples and (
        len(samples) < settings.min_samples or time.perf_counter() < deadline
    ):
        start = clock()
        fn()
        samples.append(clock() - start)
    return samples


# Part 1: allotment recomputation.


def bench_allotment(endpoints: int, settings: Settings, problems: Problems) -> dict[str, Any]:
    """One VIP of ``endpoints`` agent members (one host each, listed by the fabric), synced through handle_datagram;
    the time of each step of an allotment recomputation."""
    setup_start = time.perf_counter()
    config = parse_config(config_data(endpoints, endpoints, fabric_hosts=True))
    lb = LoadBalancer(config, KEY, START)
    setup_s = time.perf_counter() - setup_start
    agents = [Agent(i, vip_address(0)) for i in range(endpoints)]
    datagrams = sync_datagrams(agents, SYNC_AT)
    sync_start = time.perf_counter()
    replies = sync(lb, datagrams, SYNC_AT)
    sync_s = time.perf_counter() - sync_start
    health, vip, has_mac = lb.health, config.vips[0], has_mac_of(lb)
    cache = health.cache
    problems.check(
        replies == endpoints,
        f"allotment {endpoints}: {replies} replies to the sync, expected one get_snapshot per host",
    )
    problems.check(
        len(cache.hosts) == endpoints and all(h.warm for h in cache.hosts.values()),
        f"allotment {endpoints}: not every host is in the cache and warm",
    )
    problems.check(cache.warm(READY_AT), f"allotment {endpoints}: warm-up gate still closed")
    candidates = health.candidates(vip, has_mac)
    eligible = sum(c.eligible for c in candidates)
    expected = sum(1 for i in range(endpoints) if i % 10 != 9)
    problems.check(eligible == expected, f"allotment {endpoints}: {eligible} eligible candidates, expected {expected}")
    service = (vip.address, vip.port, vip.protocol, "")
    reference = compute_allotment(service, candidates, now=READY_AT)
    problems.check(
        reference.total == 100 and reference.values == health.allotment_for(vip, has_mac, READY_AT).values,
        f"allotment {endpoints}: allotment_for differs from compute_allotment over the same candidates",
    )

    clock = [READY_AT]

    def pick_refresh() -> None:
        clock[0] += DURATION_S + 0.5
        health.pick(vip, has_mac, clock[0])

    def pick_steady() -> None:
        health.pick(vip, has_mac, clock[0])

    steps: dict[str, Callable[[], Any]] = {
        "sorted": lambda: sorted(candidates, key=lambda c: c.name),
        "compute_allotment": lambda: compute_allotment(service, candidates, now=READY_AT),
        "allotment_for": lambda: health.allotment_for(vip, has_mac, READY_AT),
        "pick_refresh": pick_refresh,
        "pick_steady": pick_steady,
    }
    figures: dict[str, Any] = {}
    for name, fn in steps.items():
        refreshes = health.spenders[vip.name].counters["refreshes"] if vip.name in health.spenders else 0
        samples = time_calls(fn, settings)
        figures[name] = summary_us(samples)
        spender = health.spenders.get(vip.name)
        if name == "pick_refresh":
            done = spender.counters["refreshes"] - refreshes if spender else 0
            problems.check(
                done >= len(samples), f"allotment {endpoints}: {done} refreshes for {len(samples)} expired picks"
            )
        if name == "pick_steady":
            problems.check(
                spender is not None and spender.counters["refreshes"] == refreshes,
                f"allotment {endpoints}: a steady pick recomputed the allotment",
            )
    problems.check(not health.refused, f"allotment {endpoints}: picks refused {dict(health.refused)}")
    medians = {name: figures[name]["median_us"] for name in figures}
    ratios = {
        "compute_allotment/sorted": round(medians["compute_allotment"] / medians["sorted"], 2),
        "allotment_for/compute_allotment": round(medians["allotment_for"] / medians["compute_allotment"], 2),
        "pick_refresh/compute_allotment": round(medians["pick_refresh"] / medians["compute_allotment"], 2),
        "pick_refresh/pick_steady": round(medians["pick_refresh"] / medians["pick_steady"], 2),
    }
    log(
        f"  {endpoints} endpoints: sorted {medians['sorted']} us, compute_allotment {medians['compute_allotment']} us, "
        f"allotment_for {medians['allotment_for']} us, pick (refresh) {medians['pick_refresh']} us, "
        f"pick (steady) {medians['pick_steady']} us; setup {setup_s:.2f} s, sync {sync_s:.3f} s"
    )
    return {
        "endpoints": endpoints,
        "eligible": eligible,
        "figures": figures,
        "ratios": ratios,
        "setup_s": round(setup_s, 3),
        "sync_s": round(sync_s, 4),
        "sync_messages": len(datagrams),
    }


# Part 2: messages per second through handle_datagram.


def rate_messages(rounds: int) -> tuple[Datagrams, dict[str, Datagrams]]:
    """The first datagrams of RATE_HOSTS agents, then each phase's (in the order they must be fed: seq and checksum
    chains continue from one phase to the next)."""
    agents = [Agent(i, vip_address(0)) for i in range(RATE_HOSTS)]
    first = sync_datagrams(agents, SYNC_AT)
    phases: dict[str, Datagrams] = {"heartbeat": [], "row_change_load": [], "row_change_health": [], "forged": []}
    for _ in range(rounds):
        phases["heartbeat"] += [(a.addr, a.heartbeat(READY_AT)) for a in agents]
    for number in range(rounds):
        phases["row_change_load"] += [
            (a.addr, a.change(READY_AT, load=float((i * 37 + number + 1) % 160))) for i, a in enumerate(agents)
        ]
    for _ in range(rounds):
        phases["row_change_health"] += [
            (a.addr, a.change(READY_AT, health="failed" if a.row.health == "ok" else "ok")) for a in agents
        ]
    for _ in range(rounds):
        phases["forged"] += [(a.addr, a.heartbeat(READY_AT, key=FORGED_KEY)) for a in agents]
    return first, phases


def timed_each(
    datagrams: Datagrams, fn: Callable[[tuple[str, int], bytes], Any], before: Callable[[], Any] | None = None
) -> tuple[list[int], int]:
    """Time ``fn`` on every datagram (``before`` runs untimed ahead of each); the times in ns and the sum of the
    results' lengths (replies) where they have one."""
    clock = time.perf_counter_ns
    samples: list[int] = []
    results = 0
    for addr, data in datagrams:
        if before is not None:
            before()
        start = clock()
        result = fn(addr, data)
        samples.append(clock() - start)
        if isinstance(result, list):
            results += len(result)
    return samples, results


def rate_of(samples_ns: list[int]) -> float:
    """Messages per second over the summed call times."""
    return len(samples_ns) / (sum(samples_ns) / 1e9)


def bench_rates_once(
    config: Config, first: Datagrams, phases: dict[str, Datagrams], problems: Problems, rep: int
) -> dict[str, Any]:
    """One repetition: a fresh LoadBalancer synced with every host, then each phase through handle_datagram, then the
    baselines over the same datagrams."""
    lb = LoadBalancer(config, KEY, START)
    sync(lb, first, SYNC_AT)
    health, vip, has_mac = lb.health, config.vips[0], has_mac_of(lb)
    problems.check(health.pick(vip, has_mac, READY_AT) is not None, f"rates repetition {rep}: no member picked")
    verifier, cache = health.verifier, health.cache
    assert verifier is not None
    result: dict[str, Any] = {}
    for phase, datagrams in phases.items():
        accepted, dropped = sum(verifier.accepted.values()), verifier.dropped["bad_mac"]
        resyncs, revocations = sum(cache.resyncs.values()), _revocations(lb)
        before = (lambda: health.pick(vip, has_mac, READY_AT)) if phase == "row_change_health" else None
        samples, replies = timed_each(
            datagrams, lambda addr, data: lb.handle_datagram(data, addr, READY_AT).datagrams, before
        )
        forged = phase == "forged"
        problems.check(replies == 0, f"rates repetition {rep} {phase}: {replies} replies, expected none")
        problems.check(sum(cache.resyncs.values()) == resyncs, f"rates repetition {rep} {phase}: snapshots requested")
        problems.check(
            sum(verifier.accepted.values()) - accepted == (0 if forged else len(datagrams)),
            f"rates repetition {rep} {phase}: not every message accepted as expected",
        )
        problems.check(
            verifier.dropped["bad_mac"] - dropped == (len(datagrams) if forged else 0),
            f"rates repetition {rep} {phase}: bad_mac drops differ from the forged messages",
        )
        result[phase] = {
            "messages": len(datagrams),
            "rate": round(rate_of(samples), 1),
            **summary_us(samples),
            "revocations": _revocations(lb) - revocations,
        }
    alone = Verifier(KEY, UDP_MAX_SIZE)
    for phase, datagrams in phases.items():
        verify, _ = timed_each(datagrams, lambda addr, data: alone.verify(data, READY_AT))
        decode, _ = timed_each(
            datagrams, lambda addr, data: msgpack.unpackb(data[MAC_SIZE:], raw=False, strict_map_key=True)
        )
        mac, _ = timed_each(
            datagrams,
            lambda addr, data: hmac.compare_digest(
                data[:MAC_SIZE], hmac.new(KEY, data[MAC_SIZE:], hashlib.sha256).digest()
            ),
        )
        result[phase]["baselines"] = {
            "verify": round(rate_of(verify), 1),
            "decode": round(rate_of(decode), 1),
            "hmac": round(rate_of(mac), 1),
        }
    problems.check(
        sum(alone.accepted.values()) == sum(len(d) for p, d in phases.items() if p != "forged")
        and alone.dropped["bad_mac"] == len(phases["forged"]),
        f"rates repetition {rep}: the verify-only baseline did not accept the same messages",
    )
    return result


def _revocations(lb: LoadBalancer) -> int:
    """Revocations by every allotment spender so far."""
    return sum(spender.counters["revocations"] for spender in lb.health.spenders.values())


def bench_rates(settings: Settings, problems: Problems) -> dict[str, Any]:
    """Messages per second through handle_datagram per phase, medians over fresh LoadBalancers, with baselines."""
    config = parse_config(config_data(RATE_HOSTS, RATE_HOSTS, fabric_hosts=True))
    prepare_start = time.perf_counter()
    first, phases = rate_messages(settings.rounds)
    prepare_s = time.perf_counter() - prepare_start
    runs = []
    for rep in range(1, settings.repeats + 1):
        runs.append(bench_rates_once(config, first, phases, problems, rep))
        log(
            f"  repetition {rep}/{settings.repeats}: "
            + ", ".join(f"{phase} {runs[-1][phase]['rate']:.0f}/s" for phase in phases)
        )
    medians: dict[str, Any] = {}
    for phase in phases:
        medians[phase] = {
            key: round(statistics.median(run[phase][key] for run in runs), 3)
            for key in ("rate", "median_us", "p99_us", "mean_us")
        }
        medians[phase]["baselines"] = {
            name: round(statistics.median(run[phase]["baselines"][name] for run in runs), 1) for name in BASELINES
        }
        medians[phase]["cost_ratios"] = {
            f"full/{name}": round(medians[phase]["baselines"][name] / medians[phase]["rate"], 2) for name in BASELINES
        }
        medians[phase]["messages"] = len(phases[phase])
        medians[phase]["bytes"] = round(statistics.fmean(len(data) for _addr, data in phases[phase]), 1)
    return {
        "hosts": RATE_HOSTS,
        "messages_per_phase": {p: len(d) for p, d in phases.items()},
        "prepare_s": round(prepare_s, 2),
        "medians": medians,
        "runs": runs,
    }


# Part 3: memory, in child processes.


def rss_bytes() -> int:
    """Resident set size of this process."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory_child(endpoints: int, fabric_hosts: bool, trace: bool) -> dict[str, Any]:
    """In a fresh process: the controller memory of each step (config, LoadBalancer, cache fill, one allotment per
    VIP), as tracemalloc deltas (``trace``) or RSS deltas; with ``trace``, a baseline: the same rows decoded from the
    snapshot datagrams and kept as ``Row`` objects, nothing else."""
    data = config_data(endpoints, MEMBERS_PER_VIP, fabric_hosts)
    agents = [Agent(i, vip_of(i, MEMBERS_PER_VIP)) for i in range(endpoints)]
    datagrams = sync_datagrams(agents, SYNC_AT)
    snapshots = [data for (_addr, data), kind in zip(datagrams, [0, 1] * endpoints, strict=True) if kind == 1]
    wire = sum(len(data) for data in snapshots)
    del agents
    gc.collect()
    if trace:
        tracemalloc.start()
    measure = (lambda: tracemalloc.get_traced_memory()[0]) if trace else rss_bytes
    marks = {"start": measure()}
    times: dict[str, float] = {}

    def mark(name: str, started: float) -> None:
        gc.collect()
        times[name] = round(time.perf_counter() - started, 3)
        marks[name] = measure()

    started = time.perf_counter()
    config = parse_config(data)
    mark("config", started)
    started = time.perf_counter()
    lb = LoadBalancer(config, KEY, START)
    mark("load_balancer", started)
    started = time.perf_counter()
    replies = sync(lb, datagrams, SYNC_AT)
    mark("cache", started)
    started = time.perf_counter()
    picked = sum(lb.health.pick(vip, has_mac_of(lb), READY_AT) is not None for vip in config.vips)
    mark("allotments", started)
    steps = ["config", "load_balancer", "cache", "allotments"]
    previous = "start"
    deltas = {}
    for step in steps:
        deltas[step] = marks[step] - marks[previous]
        previous = step
    cache = lb.health.cache
    result: dict[str, Any] = {
        "endpoints": endpoints,
        "fabric_hosts": fabric_hosts,
        "measure": "tracemalloc" if trace else "rss",
        "vips": len(config.vips),
        "deltas": deltas,
        "total": marks["allotments"] - marks["start"],
        "seconds": times,
        "replies": replies,
        "picked": picked,
        "hosts_cached": len(cache.hosts),
        "rows_cached": sum(len(h.rows) for h in cache.hosts.values()),
        "warm_hosts": sum(h.warm for h in cache.hosts.values()),
        "snapshot_wire_bytes": wire,
    }
    if trace:
        result["peak"] = tracemalloc.get_traced_memory()[1] - marks["start"]
        before = tracemalloc.get_traced_memory()[0]
        rows = [
            Row.from_dict(msgpack.unpackb(data[MAC_SIZE:], raw=False, strict_map_key=True)["body"]["rows"][0])
            for data in snapshots
        ]
        gc.collect()
        result["rows_alone"] = tracemalloc.get_traced_memory()[0] - before
        del rows
        tracemalloc.stop()
    result["max_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return result


def run_memory_child(endpoints: int, fabric_hosts: bool, trace: bool) -> dict[str, Any]:
    """This script in a fresh interpreter with ``--memory-child``; its JSON result."""
    spec = json.dumps({"endpoints": endpoints, "fabric_hosts": fabric_hosts, "trace": trace})
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--memory-child", spec],
        capture_output=True,
        text=True,
        timeout=MEMORY_CHILD_TIMEOUT,
        cwd=REPO,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"memory child {spec} failed: {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_memory(settings: Settings, problems: Problems) -> list[dict[str, Any]]:
    """tracemalloc and RSS figures for each memory configuration."""
    configurations = [(n, False) for n in settings.memory_sizes] + [(settings.memory_fabric_size, True)]
    results = []
    for endpoints, fabric_hosts in configurations:
        traced = run_memory_child(endpoints, fabric_hosts, trace=True)
        rss = run_memory_child(endpoints, fabric_hosts, trace=False)
        for child in (traced, rss):
            problems.check(
                child["hosts_cached"] == endpoints
                and child["rows_cached"] == endpoints
                and child["warm_hosts"] == endpoints
                and child["picked"] == child["vips"],
                f"memory {endpoints} ({'fabric' if fabric_hosts else 'mac'}, {child['measure']}): cache "
                f"or allotments incomplete",
            )
        per = 1000.0 / endpoints
        entry = {
            "endpoints": endpoints,
            "fabric_hosts": fabric_hosts,
            "vips": traced["vips"],
            "traced": traced["deltas"] | {"total": traced["total"], "peak": traced["peak"]},
            "traced_per_1000": {
                key: round(value * per) for key, value in (traced["deltas"] | {"total": traced["total"]}).items()
            },
            "rss_delta": rss["deltas"] | {"total": rss["total"]},
            "rss_delta_per_1000": round(rss["total"] * per),
            "max_rss": rss["max_rss"],
            "rows_alone": traced["rows_alone"],
            "snapshot_wire_bytes": traced["snapshot_wire_bytes"],
            "cache_over_rows_alone": round(traced["deltas"]["cache"] / traced["rows_alone"], 2),
            "seconds_untraced": rss["seconds"],
        }
        results.append(entry)
        log(
            f"  {endpoints} endpoints ({'fabric lists the hosts' if fabric_hosts else 'members carry their MAC'}): "
            f"traced {entry['traced']['total'] / 1024:.0f} KiB (cache {entry['traced']['cache'] / 1024:.0f} KiB), "
            f"RSS +{rss['total'] / 1024:.0f} KiB; sync {rss['seconds']['cache']} s"
        )
    return results


# Report.


def environment() -> dict[str, Any]:
    """What the figures depend on: CPU, Python and library versions, git commit, date and machine load."""
    return lab_report.environment(
        msgpack=importlib.metadata.version("msgpack"), pydantic=importlib.metadata.version("pydantic")
    )


def _cells(values: Iterable[str]) -> str:
    return "| " + " | ".join(values) + " |"


def tables(report: dict[str, Any]) -> str:
    """The three parts as Markdown tables."""
    out = ["### Allotment recomputation (median / p99 µs per call)", ""]
    sizes = [r["endpoints"] for r in report["allotment"]]
    out.append(_cells(["step", *(f"{n} endpoints" for n in sizes)]))
    out.append(_cells(["---", *("---:" for _ in sizes)]))
    for key, label in ALLOTMENT_ROWS:
        out.append(
            _cells(
                [
                    label,
                    *(
                        f"{r['figures'][key]['median_us']:.1f} / {r['figures'][key]['p99_us']:.1f}"
                        for r in report["allotment"]
                    ),
                ]
            )
        )
    for ratio in ("compute_allotment/sorted", "allotment_for/compute_allotment", "pick_refresh/compute_allotment"):
        out.append(_cells([f"ratio {ratio} (medians)", *(f"{r['ratios'][ratio]:.1f}" for r in report["allotment"])]))

    rates = report["rates"]
    out += [
        "",
        f"### H&L messages through `LoadBalancer.handle_datagram` ({rates['hosts']} hosts, "
        f"median of {len(rates['runs'])} run(s))",
        "",
    ]
    out.append(
        _cells(
            [
                "messages",
                "bytes",
                "msg/s",
                "p50 / p99 µs",
                "verify alone msg/s",
                "decode alone msg/s",
                "HMAC alone msg/s",
                "cost vs verify",
                "cost vs decode",
            ]
        )
    )
    out.append(_cells(["---", *("---:" for _ in range(8))]))
    for key, label in PHASES:
        m = rates["medians"][key]
        out.append(
            _cells(
                [
                    label,
                    f"{m['bytes']:.0f}",
                    f"{m['rate']:.0f}",
                    f"{m['median_us']:.1f} / {m['p99_us']:.1f}",
                    f"{m['baselines']['verify']:.0f}",
                    f"{m['baselines']['decode']:.0f}",
                    f"{m['baselines']['hmac']:.0f}",
                    f"{m['cost_ratios']['full/verify']:.2f}",
                    f"{m['cost_ratios']['full/decode']:.1f}",
                ]
            )
        )

    out += ["", "### Controller memory (KiB; tracemalloc unless RSS)", ""]
    out.append(
        _cells(
            [
                "endpoints (VIPs)",
                "fabric",
                "config",
                "LoadBalancer",
                "H&L cache",
                "allotments",
                "total",
                "total per 1,000",
                "RSS delta per 1,000",
                "rows alone",
                "cache / rows alone",
            ]
        )
    )
    out.append(_cells(["---", "---", *("---:" for _ in range(9))]))
    for m in report["memory"]:
        t = m["traced"]
        out.append(
            _cells(
                [
                    f"{m['endpoints']:,} ({m['vips']})",
                    "hosts listed" if m["fabric_hosts"] else "switch only",
                    *(f"{t[k] / 1024:.0f}" for k in ("config", "load_balancer", "cache", "allotments", "total")),
                    f"{m['traced_per_1000']['total'] / 1024:.0f}",
                    f"{m['rss_delta_per_1000'] / 1024:.0f}",
                    f"{m['rows_alone'] / 1024:.0f}",
                    f"{m['cache_over_rows_alone']:.1f}",
                ]
            )
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Run the three parts, write the JSON report, print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short sanity run (about 15 s), figures not comparable")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON report (default {DEFAULT_OUT})")
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child is not None:
        spec = json.loads(args.memory_child)
        print(json.dumps(memory_child(spec["endpoints"], spec["fabric_hosts"], spec["trace"])))
        return 0
    settings = QUICK if args.quick else FULL
    started = time.monotonic()
    problems = Problems()
    report: dict[str, Any] = {
        "benchmark": "health",
        "mode": "quick" if args.quick else "full",
        "environment": environment(),
        "settings": {
            **asdict(settings),
            "rate_hosts": RATE_HOSTS,
            "memory_members_per_vip": MEMBERS_PER_VIP,
            "allotment_scheme": "percent",
            "allotment_duration_ms": int(DURATION_S * 1000),
        },
    }
    log("allotment recomputation")
    report["allotment"] = [bench_allotment(n, settings, problems) for n in settings.allotment_sizes]
    log("messages through handle_datagram")
    report["rates"] = bench_rates(settings, problems)
    log("memory (child processes)")
    report["memory"] = bench_memory(settings, problems)
    report["problems"] = problems.found
    report["duration_s"] = round(time.monotonic() - started, 1)
    report["loadavg_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(
        f"nlb_sdn H&L benchmark, {report['mode']} mode, {report['environment']['date']}, "
        f"commit {report['environment']['git_commit'][:10]}, {report['duration_s']} s\n"
    )
    print(tables(report))
    for line in report["problems"]:
        print(f"warning: {line}")
    print(f"\nreport: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
