"""The Mininet lab in tests: the skip marker, the standard VIP, load from the clients, and the controller's view."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import pytest

from nlb_sdn.lab.harness import wait_for
from topologies import LabTopo

if TYPE_CHECKING:
    from nlb_sdn.lab.harness import Lab

VIP = "10.0.0.100"
WEIGHTS = {"h1": 1, "h2": 1, "h3": 2}
PLUMB_TIMEOUT = 15.0

needs_lab = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("mnexec") is None or shutil.which("ovs-vsctl") is None,
    reason="needs root, Open vSwitch and Mininet",
)


def web_vip(topo: LabTopo, weights: dict[str, int] = WEIGHTS, idle_timeout: int = 15) -> dict[str, Any]:
    """The lab's VIP service on port 80 over every backend, with the given weights."""
    members = topo.members()
    for member in members:
        member["weight"] = weights[member["name"]]
    return {"name": "web", "address": VIP, "port": 80, "idle_timeout": idle_timeout, "members": members}


def affinity_vip(topo: LabTopo, idle_timeout: int = 5) -> dict[str, Any]:
    """The lab's VIP service on port 80 over every backend at weight 1, with ``client_ip`` affinity."""
    return {
        "name": "web",
        "address": VIP,
        "port": 80,
        "affinity": "client_ip",
        "idle_timeout": idle_timeout,
        "members": topo.members(),
    }


def open_connections(
    lab: Lab, client: str, count: int, *, port: int = 80, concurrency: int = 4, timeout: int = 60, vip: str = VIP
) -> dict[str, Any]:
    """Open ``count`` new connections from ``client`` to the VIP (``vip``: another address, IPv4 or IPv6) on
    ``port``; every one must succeed. The client's summary."""
    summary = lab.run_client(
        client,
        ["connections", vip, "--port", port, "--count", count, "--concurrency", concurrency, "--timeout", timeout],
    )
    assert summary["errors"] == 0 and summary["ok"] == count, summary
    return summary


def packet_ins(lab: Lab) -> dict[str, int]:
    """The controller's packet-in counters by reason."""
    return lab.rest("GET", "/v1/stats")["packet_in"]


def counter_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """How much each counter of ``after`` grew since ``before`` (a counter new in ``after`` counts from 0)."""
    return {key: after.get(key, 0) - before.get(key, 0) for key in after}


def connections_of(lab: Lab, vip: str = "web") -> list[dict[str, Any]]:
    """The connections the controller tracks for ``vip``."""
    return lab.rest("GET", f"/v1/connections?vip={vip}")["connections"]


def connection_count(lab: Lab, vip: str = "web") -> int:
    """How many connections the controller tracks for ``vip``."""
    return lab.rest("GET", f"/v1/connections?vip={vip}")["count"]


def plumbed_since(lab: Lab, started: float, client_ip: str = "", vip: str = "web") -> list[dict[str, Any]]:
    """The VIP's connections the controller plumbed at or after ``started`` (``time.time()``), of one client address
    when given. Not "the keys that were not there before": a new connection may reuse the client port of a listed one.
    """
    return [
        c
        for c in connections_of(lab, vip)
        if c["installed_at"] >= started and c["client"].startswith(f"{client_ip}:" if client_ip else "")
    ]


def start_downloads(lab: Lab, count: int, size: int, rate: int) -> list[subprocess.Popen[bytes]]:
    """Start ``count`` downloads of ``size`` bytes at ``rate`` bytes/s from the VIP, spread over the lab's clients,
    and wait until the controller has plumbed them all."""
    clients = lab.topo.clients
    started = time.time()
    downloads = [
        lab.start_client(clients[i % len(clients)], ["download", VIP, "--bytes", size, "--rate", rate, "--timeout", 60])
        for i in range(count)
    ]
    wait_for(
        lambda: len(plumbed_since(lab, started)) >= count, timeout=PLUMB_TIMEOUT, what=f"{count} downloads plumbed"
    )
    return downloads


def restart_controller(lab: Lab) -> None:
    """Stop the controller, start it again and wait until every switch is connected to it."""
    lab.stop_controller()
    lab.start_controller()
    lab.wait_switches_connected()


def host_python(
    lab: Lab, host: str, script: str, *args: object, timeout: float = 20.0
) -> subprocess.CompletedProcess[str]:
    """Run the Python ``script`` (``python -c``, this interpreter) inside ``host`` with ``args``; its result."""
    return lab.host_run(host, [sys.executable, "-c", script, *map(str, args)], timeout=timeout)


def flow_counters(flow: str) -> tuple[int, int]:
    """(n_packets, n_bytes) of one ``ovs-ofctl dump-flows`` line."""
    found = re.search(r"n_packets=(\d+), n_bytes=(\d+)", flow)
    assert found, flow
    return int(found.group(1)), int(found.group(2))
