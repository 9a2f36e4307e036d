"""A restarted edge switch keeps its established connections, on Mininet: a running download survives s1 losing
every flow and reconnecting.

FabricTopo (edges s1, s2; cores s3, s4), VIP web with ``flood.half_open_idle`` so the controller knows the download is
established once its entries outlive that idle timeout. The test closes s1's controller channel
(``ovs-vsctl del-controller``), empties its tables (``ovs-ofctl del-flows``, a restarted OVS) and gives the controller
back (``set-controller``): the reconnect re-sends the download's table 1 and 2 entries from its route before the
pipeline (a reply meeting table 2's miss would reach the client with the member's address, and the client would reset
the connection), and the download ends complete, with no reset sent by the client. Run only under the lab lock:
``flock /tmp/nlb-mininet.lock pytest -m mininet``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from nlb_sdn.lab.commands import run
from nlb_sdn.lab.harness import Lab, wait_for
from tests.lib.lab import connections_of, needs_lab, start_downloads, web_vip
from tests.lib.net import free_port
from topologies import FabricTopo, lab_config

pytestmark = [pytest.mark.mininet, needs_lab]

SIZE = 6_000_000
RATE = 400_000
"""About fifteen seconds of download: long enough to restart the edge under it."""
HALF_OPEN_IDLE = 1
IDLE_EXPIRY_MARGIN = 2.0
"""As ``core/reconcile.py``: how long after the half-open idle the controller counts a connection as established."""


@pytest.fixture(scope="module")
def edge_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """The fabric lab with a short half-open idle timeout, switches connected."""
    topo = FabricTopo(clients=3, backends=3)
    config = lab_config(topo, [web_vip(topo, idle_timeout=10)], flood={"half_open_idle": HALF_OPEN_IDLE})
    lab = Lab(
        topo, config, workdir=str(tmp_path_factory.mktemp("edge-lab")), ofp_port=free_port(), rest_port=free_port()
    )
    with lab:
        lab.wait_switches_connected()
        yield lab


def ovs(*args: str) -> str:
    """Run ``ovs-vsctl`` with a time bound; its stdout, stripped."""
    return run(["ovs-vsctl", "--timeout=10", *args], check=True).stdout.strip()


def switches_seen(lab: Lab) -> set[int]:
    """The dpids the controller reports connected."""
    switches = lab.rest("GET", "/v1/stats")["switches"]
    items = switches.keys() if isinstance(switches, dict) else switches
    return {int(item["dpid"]) if isinstance(item, dict) else int(item) for item in items}


def download_entries(lab: Lab, port: str) -> list[str]:
    """s1's table 1 entries of the download (its client port)."""
    return [flow for flow in lab.dump_flows("s1", table=1) if f"tp_src={port}" in flow or f"tcp_src={port}" in flow]


def tcp_resets_sent(lab: Lab, host: str) -> int:
    """How many TCP resets ``host``'s kernel has sent (``OutRsts`` of ``/proc/net/snmp`` in its namespace)."""
    header, values = [
        line.split()
        for line in lab.host_run(host, ["cat", "/proc/net/snmp"]).stdout.splitlines()
        if line.startswith("Tcp:")
    ]
    return int(values[header.index("OutRsts")])


def test_a_download_survives_its_edge_switch_losing_its_flows_and_reconnecting(edge_lab: Lab) -> None:
    dpid = edge_lab.topo.dpids()["s1"]
    [transfer] = start_downloads(edge_lab, 1, SIZE, RATE)
    [conn] = connections_of(edge_lab)
    client_port = conn["client"].rsplit(":", 1)[1]
    established_at = conn["installed_at"] + HALF_OPEN_IDLE + IDLE_EXPIRY_MARGIN
    wait_for(lambda: time.time() > established_at, timeout=10, what="the download past its half-open idle")
    assert download_entries(edge_lab, client_port)
    client = edge_lab.topo.clients[0]
    resets = tcp_resets_sent(edge_lab, client)
    target = ovs("get-controller", "s1")
    try:
        ovs("del-controller", "s1")
        wait_for(lambda: dpid not in switches_seen(edge_lab), timeout=10, what="the controller sees s1 gone")
        run(["ovs-ofctl", "-O", "OpenFlow13", "del-flows", "s1"], check=True)
        assert not edge_lab.dump_flows("s1"), "s1 lost every flow, as a restarted switch does"
    finally:
        ovs("set-controller", "s1", target)
    wait_for(lambda: dpid in switches_seen(edge_lab), timeout=20, what="s1 reconnected")
    wait_for(lambda: download_entries(edge_lab, client_port), timeout=10, what="the download's entries back on s1")
    result = edge_lab.collect_client(transfer, timeout=90)
    assert result["ok"] and result["bytes"] == SIZE, result
    assert tcp_resets_sent(edge_lab, client) == resets, "a reply reached the client un-rewritten: it answered a reset"
    stats = edge_lab.rest("GET", "/v1/stats")
    assert stats["restored_connections"] >= 1 and stats["dropped"].get("orphan", 0) == 0, stats
