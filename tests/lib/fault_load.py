"""Constant load for fault tests and benchmarks/faults.py: established downloads and a new-connection loop on every
client, summed up as the issue's figures (established connections broken, the longest gap between new ones).

The new-connection loop is ``tests/lib/ha_load.py`` (the HA test's load), run inside every client host; the
downloads are the lab client's, spread over the clients and plumbed before the fault.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nlb_sdn.lab.commands import wait_for
from tests.lib.ha_load import longest_gap
from tests.lib.lab import VIP, plumbed_since, start_downloads

if TYPE_CHECKING:
    from nlb_sdn.lab.harness import Lab

LOAD_SCRIPT = str(Path(__file__).resolve().parent / "ha_load.py")
PROBE_TIMEOUT = 90.0
"""Seconds a new-connection loop may take past its duration before it counts as hung."""


@dataclass
class LoadFigures:
    """What the load saw across a fault: downloads broken of those established, and per client the longest time
    between two successful new connections (``gaps``), the successes' times and the failed attempts."""

    established: int
    broken: int
    gaps: list[float]
    failures: int
    ok_times: list[list[float]] = field(repr=False)

    @property
    def outage(self) -> float:
        """The new-connection outage window: the longest gap of any client (s)."""
        return max(self.gaps, default=0.0)

    def spans(self, instant: float) -> bool:
        """Whether every client had successes both before and after ``instant`` (``time.time()``)."""
        return all(times and min(times) < instant < max(times) for times in self.ok_times)


@dataclass
class FaultLoad:
    """Downloads of ``size`` bytes at ``rate`` bytes/s (``downloads`` of them) and a new-connection loop on every
    client for ``duration`` s. :meth:`start` before the fault, :meth:`finish` after it."""

    lab: Lab
    duration: float
    downloads: int = 6
    size: int = 2_400_000
    rate: int = 240_000
    _transfers: list[subprocess.Popen[bytes]] = field(default_factory=list, init=False)
    _probes: list[subprocess.Popen[bytes]] = field(default_factory=list, init=False)
    _loops_started: float = field(default=0.0, init=False)

    def start(self) -> None:
        """Start the downloads (waiting until the controller plumbed them all), then the loops."""
        self._transfers = start_downloads(self.lab, self.downloads, self.size, self.rate)
        self._loops_started = time.time()
        self._probes = [
            self.lab.host(client).popen(
                [sys.executable, LOAD_SCRIPT, VIP, "80", str(self.duration)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for client in self.lab.topo.clients
        ]

    def wait_flowing(self, count: int = 20, timeout: float = 10.0) -> None:
        """Wait until the controller plumbed ``count`` new connections since the loops started."""
        wait_for(lambda: len(plumbed_since(self.lab, self._loops_started)) >= count, timeout, 0.05, "new connections")

    def finish(self) -> LoadFigures:
        """Wait for every download and loop to end; the figures."""
        results = [self.lab.collect_client(proc, timeout=PROBE_TIMEOUT) for proc in self._transfers]
        broken = sum(1 for r in results if not r["ok"] or r["bytes"] != self.size)
        loops = [_loop_result(proc) for proc in self._probes]
        return LoadFigures(
            established=len(results),
            broken=broken,
            gaps=[longest_gap(loop["ok_times"]) for loop in loops],
            failures=sum(loop["failures"] for loop in loops),
            ok_times=[loop["ok_times"] for loop in loops],
        )


def _loop_result(proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    """The summary line one new-connection loop printed."""
    out, err = proc.communicate(timeout=PROBE_TIMEOUT)
    if proc.returncode != 0:
        raise AssertionError(err.decode(errors="replace"))
    result: dict[str, Any] = json.loads(out.decode().splitlines()[-1])
    return result
