"""Smoke test under ryu 4.34 (second venv, .venv-ryu): a switch connects to the same classifier app and a VIP answers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nlb_sdn.lab.harness import Lab
from tests.lib.lab import VIP, needs_lab, packet_ins, web_vip
from tests.lib.net import free_port
from topologies import SingleTopo, lab_config

RYU_PYTHON = Path(__file__).resolve().parents[2] / ".venv-ryu" / "bin" / "python"

pytestmark = [pytest.mark.mininet, pytest.mark.ryu, needs_lab]


@pytest.mark.skipif(not RYU_PYTHON.exists() and not os.environ.get("CI"),
                    reason="no .venv-ryu (run scripts/ryu-venv.sh); required in CI")
def test_classifier_runs_under_ryu_4_34(tmp_path):
    topo = SingleTopo(clients=2, backends=3)
    config = lab_config(topo, [web_vip(topo)])
    command = [str(RYU_PYTHON), "-m", "nlb_sdn.cli", "controller", "--framework", "ryu", "--config", "{config}",
               "--ofp-tcp-listen-port", "{ofp_port}"]
    with Lab(topo, config, workdir=str(tmp_path), controller_cmd=command, ofp_port=free_port(),
             rest_port=free_port()) as lab:
        lab.wait_switches_connected(via="rest")
        summary = lab.run_client("c1", ["connections", VIP, "--count", 40, "--concurrency", 4, "--timeout", 60])
        assert summary["ok"] == 40 and summary["errors"] == 0, summary
        assert set(summary["served_by"]) == {"h1", "h2", "h3"}
        assert packet_ins(lab)["new_connection"] == 40
    log = (tmp_path / "controller.log").read_text()
    assert "loading app ryu.controller.ofp_handler" in log and "loading app nlb_sdn.apps.classifier" in log
