"""A fabric that reacts, on Mininet: cutting the client edge's link to core A moves a running download to core B.

FabricTopo (edges s1, s2; cores s3, s4). A long download from c1 crosses s3; ``ovs-ofctl mod-port s1 1 down`` cuts
s1-s3: the port status reaches the controller, which moves table 3 of s1 and s2 to s4. The download goes on (its
connection entries keep counting, it ends complete), new connections work, and bringing the port back up moves the
paths back. Run only under the lab lock: ``flock /tmp/nlb-mininet.lock pytest -m mininet ...``.
"""

from __future__ import annotations

import re
import time

import pytest

from nlb_sdn.lab.commands import run
from nlb_sdn.lab.harness import Lab, wait_for
from tests.lib.fault_load import FaultLoad
from tests.lib.lab import connections_of, flow_counters, needs_lab, open_connections, start_downloads

pytestmark = [pytest.mark.mininet, needs_lab]

SIZE = 4_000_000
RATE = 400_000
"""About ten seconds of download: long enough to cut and mend a link under it."""
UPLINK_A = 1
"""s1's port toward s3 (core A); port 2 goes to s4 (core B)."""


def out_port(lab: Lab, switch: str, mac: str) -> int | None:
    """The port table 3 of ``switch`` sends ``mac`` to, if it has an entry for it."""
    for flow in lab.dump_flows(switch, table=3):
        if f"dl_dst={mac}" in flow:
            found = re.search(r"output:(\d+)", flow)
            return int(found.group(1)) if found else None
    return None


def reverse_bytes(lab: Lab) -> int:
    """Bytes counted so far by the download's reverse (member to client) entry at the client edge."""
    flows = [f for f in lab.dump_flows("s1", table=2) if "tcp_src=" in f or "tp_src=" in f]
    assert len(flows) == 1, flows
    return flow_counters(flows[0])[1]


def mod_port(state: str) -> None:
    """Bring s1's uplink to core A down or up (administratively), as a cut cable would."""
    run(["ovs-ofctl", "-O", "OpenFlow13", "mod-port", "s1", str(UPLINK_A), state], check=True)


def test_a_cut_link_moves_a_running_download_to_the_other_core(fabric_lab: Lab) -> None:
    hosts = {host["name"]: host for host in fabric_lab.config["fabric"]["hosts"]}
    [transfer] = start_downloads(fabric_lab, 1, SIZE, RATE)
    try:
        [conn] = connections_of(fabric_lab)
        member_mac, client_mac = hosts[conn["member"]]["mac"], hosts["c1"]["mac"]
        assert out_port(fabric_lab, "s1", member_mac) == UPLINK_A
        mod_port("down")
        wait_for(lambda: out_port(fabric_lab, "s1", member_mac) == 2, timeout=10, what="s1 rerouted through s4")
        wait_for(lambda: out_port(fabric_lab, "s2", client_mac) == 2, timeout=10, what="s2 rerouted through s4")
        moved = reverse_bytes(fabric_lab)
        wait_for(lambda: reverse_bytes(fabric_lab) > moved, timeout=10, what="the download going on through s4")
        open_connections(fabric_lab, "c2", 5)
        events = fabric_lab.rest("GET", "/v1/events?kind=port_down")["events"]
        assert any(event["port"] == UPLINK_A for event in events), events
    finally:
        mod_port("up")
    wait_for(lambda: out_port(fabric_lab, "s1", hosts["h1"]["mac"]) == UPLINK_A, timeout=10, what="paths back on s3")
    result = fabric_lab.collect_client(transfer, timeout=90)
    assert result["ok"] and result["bytes"] == SIZE, result
    wait_for(lambda: fabric_lab.rest("GET", "/v1/stats")["fabric"]["down_ports"] == 0, timeout=10, what="every port up")


def test_a_cut_link_under_load_from_every_client_breaks_no_established_connection(fabric_lab: Lab) -> None:
    """Issue 11: the same cut under constant load (downloads and a new-connection loop on every client)."""
    load = FaultLoad(fabric_lab, duration=12.0, downloads=6, size=2_400_000, rate=240_000)
    load.start()
    load.wait_flowing()
    cut_at = time.time()
    mod_port("down")
    try:
        wait_for(lambda: fabric_lab.rest("GET", "/v1/stats")["fabric"]["down_ports"] >= 1, timeout=10, what="port down")
    finally:
        mod_port("up")
    figures = load.finish()
    print(f"Cut link figures: broken={figures.broken} gaps={[round(g, 2) for g in figures.gaps]}")
    assert figures.broken == 0, f"{figures.broken} of {figures.established} established downloads broke"
    assert figures.spans(cut_at), "load from every client on both sides of the cut"
    wait_for(lambda: fabric_lab.rest("GET", "/v1/stats")["fabric"]["down_ports"] == 0, timeout=10, what="every port up")
