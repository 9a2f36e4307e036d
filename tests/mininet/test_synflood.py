"""A SYN flood in the fabric lab: one client floods VIP web with spoofed-source SYNs while the others connect.

The flood comes from c1 through a raw AF_PACKET socket (frames built with ``nlb_sdn.core.frames.tcp_frame``), from
random addresses of the lab's subnet that no lab host uses, bounded in count and time. Legitimate clients c2 and c3
open connections meanwhile; at least 95 % must succeed, the REST API must keep answering, and afterwards the
connection table and the switches' connection entries must return to what they were. Run for both dispatch modes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from nlb_sdn.lab.harness import Lab, wait_for
from tests.lib.lab import VIP, connection_count, needs_lab, web_vip
from tests.lib.net import free_port
from topologies import FabricTopo, lab_config

pytestmark = [pytest.mark.mininet, needs_lab]

FLOOD_SECONDS = 10.0
FLOOD_COUNT = 400_000
LEGIT_CLIENTS = ("c2", "c3")
LEGIT_COUNT = 150
MIN_SUCCESS = 0.95
REST_BOUND = 2.0
"""Seconds a REST read may take during the flood."""
SETTLE_TIMEOUT = 90.0
SETTLE_REST_TIMEOUT = 30.0
FLOOD = {"half_open_idle": 3, "source_prefix": 32, "source_quota": 20, "vip_syn_rate": 2000}

FLOODER = r"""
import json, random, socket, sys, time
from nlb_sdn.core.frames import TCP_SYN, tcp_frame
iface, src_mac, vip_mac, vip, count, seconds = sys.argv[1:7]
count, seconds = int(count), float(seconds)
rng = random.Random(12)
frames = [
    tcp_frame(src_mac, vip_mac, f"10.0.0.{rng.randint(150, 250)}", vip, rng.randint(1024, 65535), 80, TCP_SYN,
              seq=rng.getrandbits(32))
    for _ in range(20000)
]
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
sock.bind((iface, 0))
sent, started = 0, time.monotonic()
deadline = started + seconds
while sent < count and time.monotonic() < deadline:
    for frame in frames[sent % 20000 : sent % 20000 + 500]:
        try:
            sock.send(frame)
        except OSError:
            continue
        sent += 1
elapsed = time.monotonic() - started
print(json.dumps({"sent": sent, "seconds": elapsed, "rate": sent / elapsed}))
"""


@pytest.fixture(params=["controller", "switch"])
def flood_lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """The fabric lab with VIP web dispatched by ``request.param`` and SYN-flood protection configured."""
    topo = FabricTopo(clients=3, backends=3)
    vip = web_vip(topo, idle_timeout=15) | {"dispatch": request.param}
    config = lab_config(topo, [vip], flood=FLOOD)
    workdir = str(tmp_path_factory.mktemp(f"synflood-{request.param}"))
    with Lab(topo, config, workdir=workdir, ofp_port=free_port(), rest_port=free_port()) as lab:
        lab.wait_switches_connected()
        yield lab


def settled_count(lab: Lab) -> int:
    """The VIP's tracked connections, read with a generous bound: after a flood in switch dispatch the controller
    still lists thousands of switch-dispatched connections, one JSON document (REST has no pagination yet)."""
    return int(lab.rest("GET", "/v1/connections?vip=web", timeout=SETTLE_REST_TIMEOUT)["count"])


def nat_entries(lab: Lab) -> int:
    """Connection entries (nat cookie kind, or learned by the switch) in tables 1, 2, 4 and 5 of every switch."""
    return sum(
        1
        for switch in lab.topo.switches()
        for table in (1, 2, 4, 5)
        for flow in lab.dump_flows(switch, table)
        if "cookie=0x2" in flow and "priority=200" in flow
    )


def test_a_spoofed_syn_flood_leaves_legitimate_clients_served(flood_lab: Lab, request: pytest.FixtureRequest) -> None:
    lab = flood_lab
    baseline_connections, baseline_entries = connection_count(lab), nat_entries(lab)
    vip_mac = lab.rest("GET", "/v1/vips/web")["mac"]
    args = ["c1-eth0", lab.topo.host_mac("c1"), vip_mac, VIP, FLOOD_COUNT, FLOOD_SECONDS]
    flooder = lab.host("c1").popen(
        [sys.executable, "-c", FLOODER, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    try:
        report = _flood_with_clients(lab, flooder, request.node.callspec.params["flood_lab"])
    finally:
        if flooder.poll() is None:
            flooder.kill()
            flooder.wait(timeout=10)
    assert report["legit_success"] >= MIN_SUCCESS, report
    assert report["rest_max_s"] <= REST_BOUND, report
    wait_for(
        lambda: settled_count(lab) <= baseline_connections and nat_entries(lab) <= baseline_entries,
        timeout=SETTLE_TIMEOUT,
        interval=1.0,
        what="the connection table and the switches' connection entries back to their baseline",
    )


def _flood_with_clients(lab: Lab, flooder: subprocess.Popen[bytes], dispatch: str) -> dict[str, Any]:
    """Let the legitimate clients connect and time REST reads while the flood runs; what happened."""
    legit = [
        lab.start_client(
            client, ["connections", VIP, "--count", LEGIT_COUNT, "--concurrency", 4, "--timeout", 60, "--rate", 20]
        )
        for client in LEGIT_CLIENTS
    ]
    rest_times = []
    while flooder.poll() is None:
        started = time.monotonic()
        lab.rest("GET", "/v1/stats", timeout=REST_BOUND * 2)
        rest_times.append(time.monotonic() - started)
        time.sleep(0.5)
    out, err = flooder.communicate(timeout=30)
    summaries = [lab.collect_client(proc, timeout=90) for proc in legit]
    stats = lab.rest("GET", "/v1/stats")
    report = {
        "dispatch": dispatch,
        "flood": json.loads(out.decode().strip().splitlines()[-1]) if out.strip() else err.decode()[-500:],
        "legit_success": sum(s["ok"] for s in summaries) / (LEGIT_COUNT * len(LEGIT_CLIENTS)),
        "rest_max_s": max(rest_times, default=float("inf")),
        "refused": stats["refused"],
        "packet_in": stats["packet_in"],
    }
    print("SYNFLOOD", json.dumps(report))
    return report
