"""Lab harness smoke test: FabricTopo comes up with backends listening and goes away without leftovers.

The controller is a placeholder process (nothing connects), so this checks the harness alone, not the balancer.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from nlb_sdn.lab.harness import Lab
from tests.lib.lab import needs_lab
from tests.lib.net import free_port
from topologies import FabricTopo, lab_config

pytestmark = [pytest.mark.mininet, needs_lab]


def test_fabric_lab_comes_up_and_leaves_nothing_behind(tmp_path):
    topo = FabricTopo(clients=2, backends=2)
    placeholder = [sys.executable, "-c", "import time; time.sleep(600)"]
    lab = Lab(
        topo,
        lab_config(topo, []),
        controller_cmd=placeholder,
        ofp_port=free_port(),
        rest_port=free_port(),
        workdir=str(tmp_path),
        static_arp=True,
    )
    with lab:
        bridges = subprocess.run(["ovs-vsctl", "list-br"], capture_output=True, text=True, timeout=10).stdout.split()
        assert {"s1", "s2", "s3", "s4"} <= set(bridges)
        for switch in ("s1", "s3"):
            assert lab.dump_flows(switch) == []
            assert not lab.ovs_connected(switch)
        for name in topo.backends:
            assert ":80 " in lab.host_run(name, ["ss", "-ltnH"]).stdout
            summary = lab.run_client(name, ["connections", "127.0.0.1", "--count", "20", "--concurrency", "4"])
            assert summary["served_by"] == {name: 20} and summary["returncode"] == 0
        offload = lab.host_run("c1", ["ethtool", "-k", "c1-eth0"]).stdout
        assert "tx-checksumming: off" in offload
        assert "10.0.0.11 dev c1-eth0 lladdr 00:00:00:00:00:11 PERMANENT" in lab.host_run("c1", ["ip", "neigh"]).stdout
        with pytest.raises(TimeoutError):
            lab.wait_switches_connected(timeout=1.0)
        assert lab.leftovers()
    assert lab.leftovers() == []
    assert (tmp_path / "config.yaml").exists() and (tmp_path / "backend-h1-80.log").exists()
