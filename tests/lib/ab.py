"""A real HTTP client in the Mininet lab: ApacheBench (Debian ``apache2-utils``) runs and the client's TCP counters."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from nlb_sdn.lab.harness import Lab

needs_ab = pytest.mark.skipif(shutil.which("ab") is None, reason="needs ApacheBench (apt-get install apache2-utils)")
AB_TIMEOUT = 120.0
"""Seconds an ``ab`` run may take before it is stopped (``ab -s`` bounds each request as well)."""


@dataclass(frozen=True)
class AbRun:
    """What one ``ab`` run reported: completed and failed requests and request-time percentiles (ms)."""

    complete: int
    failed: int
    percentiles: dict[int, float]

    def summary(self) -> str:
        """p50/p95/p99 in ms, for a test's output."""
        return " ".join(f"p{p}={self.percentiles[p]:.1f}ms" for p in (50, 95, 99))


def run_ab(lab: Lab, host: str, url: str, requests: int, concurrency: int, csv_path: str) -> AbRun:
    """Run ``ab -n requests -c concurrency url`` in ``host`` (HTTP/1.0, a new connection per request)."""
    result = lab.host_run(
        host,
        ["ab", "-q", "-s", "10", "-n", str(requests), "-c", str(concurrency), "-e", csv_path, url],
        timeout=AB_TIMEOUT,
    )
    assert result.returncode == 0, result.stderr
    complete = re.search(r"Complete requests:\s+(\d+)", result.stdout)
    failed = re.search(r"Failed requests:\s+(\d+)", result.stdout)
    assert complete and failed, result.stdout
    with open(csv_path) as rows:
        percentiles = {int(float(p)): float(ms) for p, ms in (line.split(",") for line in list(rows)[1:])}
    return AbRun(int(complete.group(1)), int(failed.group(1)), percentiles)


def tcp_counter(lab: Lab, host: str, name: str) -> int:
    """An absolute TCP counter of ``host``'s network namespace (``nstat -az``, e.g. ``TcpRetransSegs``)."""
    result = lab.host_run(host, ["nstat", "-az", name])
    for line in result.stdout.splitlines():
        fields = line.split()
        if fields and fields[0] == name:
            return int(fields[1])
    raise AssertionError(f"{host}: nstat shows no {name}:\n{result.stdout}")


def open_sockets(lab: Lab, host: str, address: str) -> list[str]:
    """``ss`` lines of ``host``'s TCP sockets toward ``address`` that are still open (TIME_WAIT is closed)."""
    result = lab.host_run(host, ["ss", "-tanH", "exclude", "time-wait", "dst", address])
    return [line for line in result.stdout.splitlines() if line.strip()]
