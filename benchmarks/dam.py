"""Benchmark: DAM put/get latency (memory vs Redis), memory per 100,000 route atoms, and the cost of listing them.

Run from the repository root: ``.venv/bin/python benchmarks/dam.py [--quick] [--out benchmarks/results/dam.json]``.
Redis is a private redis-server (``tests/lib/redis_server.py``) on loopback, reached through redis-py without eventlet.
``docs/dam.md`` explains each figure.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import json
import os
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import redis

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # for tests.lib.redis_server, the same private server the tests use

from nlb_sdn.dam import ROUTE_PREFIX, Atom, Dam, MemoryDam, RedisDam, route_key  # noqa: E402
from nlb_sdn.lab import report as lab_report  # noqa: E402
from nlb_sdn.lab.report import command_output  # noqa: E402
from tests.lib.redis_server import REDIS_SERVER, RedisServer  # noqa: E402

DEFAULT_OUT = REPO / "benchmarks" / "results" / "dam.json"
FOOTPRINT_ATOMS = 100_000
ROUTE_TTL = 120.0


@dataclass(frozen=True)
class Settings:
    """How much each phase does; every loop is bounded by a count and a time."""

    atoms: int  # route atoms written (and then read back) per backend
    phase_timeout: float  # bound on each timed phase, in seconds
    get_many_batch: int  # keys per get_many call
    scan_page: int  # atoms per scan page


FULL = Settings(atoms=100_000, phase_timeout=60.0, get_many_batch=100, scan_page=100)
QUICK = Settings(atoms=10_000, phase_timeout=10.0, get_many_batch=100, scan_page=100)


def route(n: int) -> tuple[str, dict[str, Any]]:
    """The n-th route atom: key and data as the classifier writes them (endpoint, mode, flow id, dpid, classifier)."""
    key = route_key(f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}", 1024 + n % 60000, "10.0.0.100", 80)
    member = n % 8
    data = {
        "ip": f"10.0.1.{11 + member}",
        "port": 8080,
        "mac": f"00:00:00:00:01:{11 + member:02x}",
        "mode": "nat",
        "flow_id": None,
        "dpid": 1 + n % 4,
        "classifier": 1,
    }
    return key, data


def percentiles(samples_ns: list[int]) -> dict[str, float | int]:
    """Count, p50, p99 and max of latency samples, in microseconds."""
    ordered = sorted(samples_ns)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000, 2)

    return {"count": len(ordered), "p50_us": pick(0.50), "p99_us": pick(0.99), "max_us": pick(1.0)}


def timed(count: int, timeout: float, op: Callable[[int], object]) -> list[int]:
    """Run ``op(0..count-1)`` until done or ``timeout``; each call's duration in ns."""
    samples: list[int] = []
    deadline = time.monotonic() + timeout
    for n in range(count):
        start = time.perf_counter_ns()
        op(n)
        samples.append(time.perf_counter_ns() - start)
        if time.monotonic() > deadline:
            break
    return samples


def latency(dam: Dam, settings: Settings, now: float) -> dict[str, Any]:
    """put (new atoms), get (hits), get_many, a full scan and stats() on one backend."""
    routes = [route(n) for n in range(settings.atoms)]
    put = timed(
        settings.atoms, settings.phase_timeout, lambda n: dam.put(*routes[n], origin="lbu1", ttl=ROUTE_TTL, now=now)
    )
    written = len(put)
    dam.poll_changes(max_items=written)
    keys = [key for key, _ in routes[:written]]
    get = timed(written, settings.phase_timeout, lambda n: dam.get(keys[n], now))
    batch = settings.get_many_batch
    get_many = timed(
        written // batch, settings.phase_timeout, lambda b: dam.get_many(keys[b * batch : (b + 1) * batch], now)
    )
    start = time.perf_counter()
    cursor: str | None = None
    listed = pages = 0
    while True:
        page, cursor = dam.scan(ROUTE_PREFIX, cursor, settings.scan_page, now)
        listed += len(page)
        pages += 1
        if cursor is None:
            break
    scan_s = time.perf_counter() - start
    start = time.perf_counter()
    stats = dam.stats()
    stats_s = time.perf_counter() - start
    assert stats["atoms"]["route"] == written and listed == written, (stats["atoms"], listed, written)
    return {
        "atoms": written,
        "put": percentiles(put),
        "get": percentiles(get),
        f"get_many_{settings.get_many_batch}": percentiles(get_many),
        "scan_all": {"pages": pages, "seconds": round(scan_s, 3)},
        "stats_ms": round(stats_s * 1000, 2),
    }


def traced_bytes(build: Callable[[], object]) -> int:
    """Bytes still allocated (tracemalloc) by what ``build`` returns, once it has returned."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept = build()
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del kept
    return after - before


def memory_dam_footprint(now: float) -> MemoryDam:
    """A MemoryDam holding FOOTPRINT_ATOMS route atoms, its change feed drained as the shell would."""
    dam = MemoryDam()
    for n in range(FOOTPRINT_ATOMS):
        dam.put(*route(n), origin="lbu1", ttl=ROUTE_TTL, now=now)
        if n % 1000 == 999:
            dam.poll_changes(max_items=1000)
    dam.poll_changes()
    return dam


def naive_footprint(now: float) -> dict[str, Atom]:
    """The reference: the same atoms as a plain dict of Atom objects with their data dicts."""
    return {key: Atom(key, data, 1, "lbu1", now + ROUTE_TTL) for key, data in map(route, range(FOOTPRINT_ATOMS))}


def redis_used_memory(url: str) -> int:
    """The server's ``used_memory`` in bytes."""
    return int(redis.Redis.from_url(url).info("memory")["used_memory"])


def environment() -> dict[str, Any]:
    """What the figures depend on: versions, CPUs, git commit, date and machine load."""
    return lab_report.environment(
        redis_py=importlib.metadata.version("redis"),
        msgpack=importlib.metadata.version("msgpack"),
        redis_server=command_output([REDIS_SERVER, "--version"]),
    )


def table(report: dict[str, Any]) -> str:
    """The figures as a Markdown table."""
    mem, red = report["memory"], report["redis"]
    batch = f"get_many_{report['settings']['get_many_batch']}"
    rows = [("atoms written", mem["atoms"], red["atoms"])]
    for op in ("put", "get", batch):
        for q in ("p50_us", "p99_us"):
            rows.append((f"{op} {q[:3]} µs", mem[op][q], red[op][q]))
    rows += [
        ("scan all routes, s (pages of 100)", mem["scan_all"]["seconds"], red["scan_all"]["seconds"]),
        ("stats() ms", mem["stats_ms"], red["stats_ms"]),
        (
            f"memory per {FOOTPRINT_ATOMS:,} route atoms, MB",
            report["footprint"]["memory_dam_mb"],
            report["footprint"]["redis_used_memory_mb"],
        ),
    ]
    lines = ["| figure | memory | redis |", "|---|---:|---:|"]
    lines += [f"| {name} | {m} | {r} |" for name, m, r in rows]
    lines.append(f"\nReference: the same atoms as a plain dict of Atom objects: {report['footprint']['naive_mb']} MB.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run every phase and write the JSON report; print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10,000 atoms per backend instead of 100,000")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    report: dict[str, Any] = {"environment": environment(), "settings": asdict(settings)}
    now = time.time()
    print("memory backend ...", file=sys.stderr)
    report["memory"] = latency(MemoryDam(), settings, now)
    print("footprint (tracemalloc) ...", file=sys.stderr)
    dam_bytes = traced_bytes(lambda: memory_dam_footprint(now))
    naive_bytes = traced_bytes(lambda: naive_footprint(now))
    server = RedisServer()
    server.start()
    try:
        print("redis backend ...", file=sys.stderr)
        before = redis_used_memory(server.url)
        dam = RedisDam(server.url)
        report["redis"] = latency(dam, settings, now)
        redis_bytes = (redis_used_memory(server.url) - before) * FOOTPRINT_ATOMS // report["redis"]["atoms"]
        dam.close()
    finally:
        server.cleanup()
    report["footprint"] = {
        "atoms": FOOTPRINT_ATOMS,
        "memory_dam_mb": round(dam_bytes / 1e6, 1),
        "memory_dam_bytes_per_atom": dam_bytes // FOOTPRINT_ATOMS,
        "naive_mb": round(naive_bytes / 1e6, 1),
        "naive_bytes_per_atom": naive_bytes // FOOTPRINT_ATOMS,
        "redis_used_memory_mb": round(redis_bytes / 1e6, 1),
        "redis_bytes_per_atom": redis_bytes // FOOTPRINT_ATOMS,
    }
    report["environment"]["loadavg_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
