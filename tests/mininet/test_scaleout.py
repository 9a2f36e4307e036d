"""Runtime scale-out and scale-in on Mininet: a forwarder added and two removed through REST under constant load.

ScaleoutTopo (edges s1, s2; forwarders s3, s4, s5), the config starting without s5. New-connection loops run on every
client (``tests/lib/ha_load.py``) and downloads run across the changes: ``POST /v1/forwarders`` adds s5 (it may
connect then, and gets its pipeline), ``DELETE /v1/forwarders/s3`` moves the paths to s4, ``DELETE .../s4`` to s5.
No download breaks, no client goes more than ``GAP_LIMIT`` without a new connection, and the moved connections cost
the controller no packet-in (figure: packet-ins per moved connection, target <= 1). Run only under the lab lock:
``flock /tmp/nlb-mininet.lock pytest -m mininet tests/mininet/test_scaleout.py``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from nlb_sdn.lab.harness import Lab, wait_for
from tests.lib.ha_load import longest_gap
from tests.lib.lab import VIP, connection_count, counter_delta, needs_lab, packet_ins, start_downloads, web_vip
from tests.lib.net import free_port
from topologies import ScaleoutTopo, lab_config
from topologies.scaleout import SPARE, SPARE_DPID, SPARE_EDGE_PORT

pytestmark = [pytest.mark.mininet, needs_lab]

LOAD_SCRIPT = str(Path(__file__).resolve().parents[1] / "lib" / "ha_load.py")
LOAD_SECONDS = 40.0
"""How long each client opens new connections: from before the add until after the last removal."""
DOWNLOADS, DOWNLOAD_BYTES, DOWNLOAD_RATE = 6, 2_400_000, 240_000
"""Downloads of about 10 s, running across both removals."""
GAP_LIMIT = 1.0
"""Seconds: the longest a client may go without a new connection across the changes."""
MOVED_REASONS = ("existing_connection", "replumb")
"""Packet-in reasons of an established connection's packet reaching the controller."""
NEW_FORWARDER = {
    "name": SPARE,
    "dpid": SPARE_DPID,
    "links": [
        {"port": 1, "peer": "s1", "peer_port": SPARE_EDGE_PORT},
        {"port": 2, "peer": "s2", "peer_port": SPARE_EDGE_PORT},
    ],
}


def out_port(lab: Lab, switch: str, mac: str) -> int | None:
    """The port table 3 of ``switch`` sends ``mac`` to, if it has an entry for it."""
    for flow in lab.dump_flows(switch, table=3):
        if f"dl_dst={mac}" in flow:
            found = re.search(r"output:(\d+)", flow)
            return int(found.group(1)) if found else None
    return None


def connected(lab: Lab) -> set[int]:
    """The dpids connected to the controller (none while its REST API is not up yet)."""
    lab.check_controller()
    try:
        return set(lab.rest("GET", "/v1/stats")["switches"])
    except OSError:
        return set()


def start_probes(lab: Lab) -> list[subprocess.Popen[bytes]]:
    """A new-connection loop on every client for ``LOAD_SECONDS``."""
    command = [sys.executable, LOAD_SCRIPT, VIP, "80", str(LOAD_SECONDS)]
    return [
        lab.host(client).popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for client in lab.topo.clients
    ]


def collect_probes(probes: list[subprocess.Popen[bytes]]) -> list[dict[str, Any]]:
    """Each loop's summary (the times of its successes, its failures)."""
    results = []
    for probe in probes:
        out, err = probe.communicate(timeout=LOAD_SECONDS + 30)
        assert probe.returncode == 0, err.decode(errors="replace")
        results.append(json.loads(out.decode().strip().splitlines()[-1]))
    return results


def scaleout_config(topo: ScaleoutTopo) -> dict[str, Any]:
    """The lab config without the spare forwarder s5 (and its links): REST adds it."""
    config = lab_config(topo, [web_vip(topo, idle_timeout=5)])
    fabric = config["fabric"]
    fabric["switches"] = [switch for switch in fabric["switches"] if switch["name"] != SPARE]
    fabric["links"] = [link for link in fabric["links"] if SPARE not in (link["a"], link["b"])]
    return config


def remove_and_wait(lab: Lab, forwarder: str, mac: str, port: int) -> None:
    """Remove ``forwarder`` through REST and wait until s1 sends ``mac`` out of ``port``."""
    assert lab.rest("DELETE", f"/v1/forwarders/{forwarder}") is None
    wait_for(lambda: out_port(lab, "s1", mac) == port, timeout=10, what=f"s1 rerouted after removing {forwarder}")


def test_a_forwarder_added_and_two_removed_under_load(tmp_path: Path) -> None:
    topo = ScaleoutTopo(clients=3, backends=3)
    lab = Lab(topo, scaleout_config(topo), workdir=str(tmp_path), ofp_port=free_port(), rest_port=free_port())
    with lab:
        wait_for(lambda: {1, 2, 3, 4} <= connected(lab), timeout=30, what="s1..s4 connected")
        h1_mac = topo.host_mac("h1")
        assert out_port(lab, "s1", h1_mac) == 1 and SPARE_DPID not in connected(lab)
        probes = start_probes(lab)
        added = lab.rest("POST", "/v1/forwarders", NEW_FORWARDER)
        assert added["name"] == SPARE and added["role"] == "forwarder"
        wait_for(lambda: lab.rest("GET", f"/v1/forwarders/{SPARE}")["connected"], timeout=30, what="s5 connected")
        wait_for(lambda: out_port(lab, SPARE, h1_mac) == 2, timeout=10, what="s5 has its paths")
        downloads = start_downloads(lab, DOWNLOADS, DOWNLOAD_BYTES, DOWNLOAD_RATE)
        tracked, before = connection_count(lab), packet_ins(lab)
        remove_and_wait(lab, "s3", h1_mac, 2)
        remove_and_wait(lab, "s4", h1_mac, SPARE_EDGE_PORT)
        delta = counter_delta(before, packet_ins(lab))
        results = [lab.collect_client(download, timeout=90) for download in downloads]
        probed = collect_probes(probes)
    broken = [result for result in results if not result["ok"] or result["bytes"] != DOWNLOAD_BYTES]
    gaps = [longest_gap(result["ok_times"]) for result in probed]
    moved_packet_ins = sum(delta.get(reason, 0) for reason in MOVED_REASONS)
    per_moved = moved_packet_ins / DOWNLOADS  # every download moved twice; any probe's packet-in counts against them
    print(
        f"scale-out figures: broken={len(broken)}/{DOWNLOADS} gaps={[round(g, 2) for g in gaps]} tracked={tracked} "
        f"packet_ins_of_moved={moved_packet_ins} per_moved_download={per_moved:.2f} delta={delta}"
    )
    assert broken == [], broken
    assert max(gaps) <= GAP_LIMIT, gaps
    assert tracked >= DOWNLOADS and per_moved <= 1.0, (tracked, delta)
