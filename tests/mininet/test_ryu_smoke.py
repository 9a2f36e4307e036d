"""Smoke tests under ryu 4.34 (second venv, .venv-ryu): a switch connects to the same classifier app and a VIP answers,
through our wrapper and through a bare ``ryu-manager``."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from nlb_sdn.lab.harness import Lab
from tests.lib.lab import VIP, needs_lab, packet_ins, plumbed_since, web_vip
from tests.lib.net import free_port
from topologies import SingleTopo, lab_config

RYU_PYTHON = Path(__file__).resolve().parents[2] / ".venv-ryu" / "bin" / "python"
RYU_MANAGER = RYU_PYTHON.parent / "ryu-manager"

pytestmark = [pytest.mark.mininet, pytest.mark.ryu, needs_lab]


@pytest.mark.skipif(
    not RYU_PYTHON.exists() and not os.environ.get("CI"),
    reason="no .venv-ryu (run scripts/ryu-venv.sh); required in CI",
)
def test_classifier_runs_under_ryu_4_34(tmp_path):
    topo = SingleTopo(clients=2, backends=3)
    config = lab_config(topo, [web_vip(topo)])
    command = [
        str(RYU_PYTHON),
        "-m",
        "nlb_sdn.cli",
        "controller",
        "--framework",
        "ryu",
        "--config",
        "{config}",
        "--ofp-tcp-listen-port",
        "{ofp_port}",
    ]
    with Lab(
        topo, config, workdir=str(tmp_path), controller_cmd=command, ofp_port=free_port(), rest_port=free_port()
    ) as lab:
        lab.wait_switches_connected(via="rest")
        summary = lab.run_client("c1", ["connections", VIP, "--count", 40, "--concurrency", 4, "--timeout", 60])
        assert summary["ok"] == 40 and summary["errors"] == 0, summary
        assert set(summary["served_by"]) == {"h1", "h2", "h3"}
        assert packet_ins(lab)["new_connection"] == 40
    log = (tmp_path / "controller.log").read_text()
    assert "loading app ryu.controller.ofp_handler" in log and "loading app nlb_sdn.apps.classifier" in log


@pytest.mark.skipif(
    not RYU_MANAGER.exists() and not os.environ.get("CI"),
    reason="no .venv-ryu (run scripts/ryu-venv.sh); required in CI",
)
def test_bare_ryu_manager_classifies_connections_to_a_vip(tmp_path, monkeypatch):
    """``NLB_SDN_CONFIG=... ryu-manager nlb_sdn.apps.classifier``, nothing else: .venv-ryu's start-up hook applies the
    eventlet fix (without it ryu-manager dies importing ryu.app.wsgi) and the framework is ryu without asking."""
    monkeypatch.delenv("NLB_SDN_FRAMEWORK", raising=False)
    topo = SingleTopo(clients=1, backends=3)
    config = lab_config(topo, [web_vip(topo)])
    command = [str(RYU_MANAGER), "--ofp-tcp-listen-port", "{ofp_port}", "nlb_sdn.apps.classifier"]
    with Lab(
        topo, config, workdir=str(tmp_path), controller_cmd=command, ofp_port=free_port(), rest_port=free_port()
    ) as lab:
        lab.wait_switches_connected(via="rest")
        started = time.time()
        summary = lab.run_client("c1", ["connections", VIP, "--count", 12, "--concurrency", 3, "--timeout", 60])
        assert summary["ok"] == 12 and summary["errors"] == 0, summary
        assert set(summary["served_by"]) <= {"h1", "h2", "h3"} and summary["served_by"], summary
        assert plumbed_since(lab, started, "10.0.0.1"), "no connection of c1 classified by the controller"
    log = (tmp_path / "controller.log").read_text()
    assert "loading app nlb_sdn.apps.classifier" in log and "loading app ryu.controller.ofp_handler" in log
