"""Sessions follow health in the fabric lab (issue 11 item 5, SPEC row 40): pinned clients leave a killed member.

VIP web is dispatched by the switches with client_ip affinity (learn pinning), its members probed by the controller.
Two clients keep opening connections from a small set of reused source ports (closed with RST, so each port is
free again at once). The member that c1 is pinned to is killed: once the controller has seen it fail, the switch
must stop sending c1's new connections there, reused ports included, within 1 s.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from nlb_sdn.flows.dispatch import SLOTS
from nlb_sdn.lab.harness import Lab, wait_for
from tests.lib.lab import VIP, needs_lab
from tests.lib.net import free_port
from topologies import FabricTopo, lab_config

pytestmark = [pytest.mark.mininet, needs_lab]

CHURN_SECONDS = 12.0
CHURN_MAX_CONNECTIONS = 4000
SOURCE_PORTS = 8
GRACE = 1.0
"""Seconds after the controller reports the member failed within which new connections may still reach it."""

CHURN = r"""
import json, socket, struct, sys, time
vip, first_port, ports, limit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[5])
deadline = time.time() + float(sys.argv[4])
for i in range(limit):
    if time.time() >= deadline:
        break
    sport = first_port + i % ports
    started, served, error = time.time(), None, None
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.settimeout(1.0)
    try:
        sock.bind(("0.0.0.0", sport))
        sock.connect((vip, 80))
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data and len(data) < 4096:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        for line in data.split(b"\r\n"):
            if line.lower().startswith(b"x-served-by:"):
                served = line.split(b":", 1)[1].strip().decode()
        if served is None:
            error = "no_answer"
    except OSError as exc:
        error = type(exc).__name__
    finally:
        sock.close()
    print(json.dumps({"t": started, "port": sport, "served_by": served, "error": error}), flush=True)
"""


def probe_health(lab: Lab) -> dict[str, str]:
    """Probe health per member."""
    probes = lab.rest("GET", "/v1/stats")["health"]["probes"]
    return {key.split("/")[1]: value["health"] for key, value in probes.items()}


def start_churn(lab: Lab, client: str, first_port: int) -> Any:
    """Start the reused-port connection loop in ``client`` (bounded in count and time); its process."""
    args = [VIP, first_port, SOURCE_PORTS, CHURN_SECONDS, CHURN_MAX_CONNECTIONS]
    return lab.start_process(client, [sys.executable, "-c", CHURN, *map(str, args)], f"churn-{client}.log")


def attempts(lab: Lab, client: str) -> list[dict[str, Any]]:
    """Every connection attempt the client's loop logged."""
    lines = (Path(lab.workdir) / f"churn-{client}.log").read_text().splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


@pytest.mark.xfail(
    strict=False,
    reason="known rare defect (issue 11 item 5, open): in about 1 of 3 CI runs one reused-port connection of a client "
    "pinned by learned entries times out after the member is detected failed",
)
def test_clients_pinned_by_the_switch_leave_a_killed_member_within_a_second(tmp_path: Path) -> None:
    topo = FabricTopo(clients=2, backends=3)
    members = [dict(member, health="probe") for member in topo.members()]
    vip = {"name": "web", "address": VIP, "port": 80, "dispatch": "switch", "affinity": "client_ip"}
    config = lab_config(topo, [vip | {"members": members}], switch_sync_period=0.5)
    with Lab(topo, config, workdir=str(tmp_path), ofp_port=free_port(), rest_port=free_port()) as lab:
        lab.wait_switches_connected()
        wait_for(lambda: set(probe_health(lab).values()) == {"ok"}, timeout=15, what="every probe to pass")
        wait_for(
            lambda: sum(lab.rest("GET", "/v1/stats")["switch_dispatch"]["slots"].get("web", {}).values()) == SLOTS,
            timeout=10,
            what="the group's buckets over the members",
        )
        churn = [start_churn(lab, client, 45000) for client in ("c1", "c2")]
        wait_for(lambda: len(attempts(lab, "c1")) >= 50, timeout=10, what="c1's first connections")
        pinned = {a["served_by"] for a in attempts(lab, "c1") if a["served_by"]}
        assert len(pinned) == 1, f"c1 is pinned to one member: {pinned}"
        victim = pinned.pop()
        lab.stop_backend(victim)
        killed = time.time()
        wait_for(lambda: probe_health(lab)[victim] == "failed", timeout=10, interval=0.05, what="the member to fail")
        detected = time.time()
        for proc in churn:
            proc.wait(timeout=CHURN_SECONDS + 10)
            lab.stop_process(proc)
        late = [
            a
            for client in ("c1", "c2")
            for a in attempts(lab, client)
            if a["t"] >= detected + GRACE and (a["error"] or a["served_by"] == victim)
        ]
        after = [a for a in attempts(lab, "c1") if a["t"] >= detected + GRACE]
        assert detected - killed < 3.5, detected - killed
        assert len(after) >= 100, f"c1 kept opening connections after the failure: {len(after)}"
        assert late == [], f"{len(late)} connections reached {victim} or failed after {GRACE}s: {late[:5]}"
        assert {a["port"] for a in after} == set(range(45000, 45000 + SOURCE_PORTS)), "reused ports were tried"
        sessions = lab.rest("GET", "/v1/stats")["sessions"]["affinity"]
        assert sessions.get("revoked_failed", 0) >= 1, sessions
