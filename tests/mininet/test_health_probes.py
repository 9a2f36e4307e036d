"""Agentless members fail over by controller probes: a TCP SYN sent through the switches, the reply punted back."""

from __future__ import annotations

import time

import pytest

from nlb_sdn.lab.harness import Lab, wait_for
from tests.lib.lab import VIP, needs_lab
from tests.lib.net import free_port
from topologies import FabricTopo, lab_config

pytestmark = [pytest.mark.mininet, needs_lab]


def probe_health(lab: Lab) -> dict[str, str]:
    """Probe health per member."""
    probes = lab.rest("GET", "/v1/stats")["health"]["probes"]
    return {key.split("/")[1]: value["health"] for key, value in probes.items()}


def test_agentless_backend_fails_over_by_controller_probes(tmp_path):
    topo = FabricTopo(clients=2, backends=3)
    members = topo.members()
    for member in members:
        member["health"] = "probe"
    config = lab_config(topo, [{"name": "web", "address": VIP, "port": 80, "members": members}])
    with Lab(topo, config, workdir=str(tmp_path), ofp_port=free_port(), rest_port=free_port()) as lab:
        lab.wait_switches_connected()
        wait_for(lambda: set(probe_health(lab).values()) == {"ok"}, timeout=15, what="every probe to pass")
        before = lab.run_client("c1", ["connections", VIP, "--count", 30, "--timeout", 60])
        assert before["served_by"] == {"h1": 10, "h2": 10, "h3": 10}
        lab.stop_backend("h1")
        stopped = time.monotonic()
        wait_for(lambda: probe_health(lab)["h1"] == "failed", timeout=10, what="h1 to fail its probes")
        assert time.monotonic() - stopped < 3.5
        after = lab.run_client("c2", ["connections", VIP, "--count", 60, "--timeout", 60])
        assert after["errors"] == 0 and "h1" not in after["served_by"], after
        allotment = lab.rest("GET", "/v1/vips/web/allotment")
        assert set(allotment["values"]) == {"h2", "h3"} and "h1" in allotment["excluded"]
        lab.start_backend("h1")
        wait_for(lambda: probe_health(lab)["h1"] == "ok", timeout=10, what="h1 to pass its probes again")
        back = lab.run_client("c1", ["connections", VIP, "--count", 30, "--timeout", 60])
        assert "h1" in back["served_by"]
        stats = lab.rest("GET", "/v1/stats")
        assert stats["packet_in"]["probe_reply"] > 0 and stats["errors"] == {}
