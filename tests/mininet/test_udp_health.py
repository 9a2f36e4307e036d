"""Agent health for a UDP VIP service in the lab: each backend's agent checks its DNS-like responder with a ``udp``
request/response check; a responder that stops answering takes its member out of the allotment."""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nlb_sdn.lab.harness import Lab, wait_for
from nlb_sdn.lab.udp_service import start_client, start_responders
from tests.lib.lab import needs_lab
from tests.lib.net import free_port
from topologies import FabricTopo, lab_config

pytestmark = [pytest.mark.mininet, needs_lab]

DNS = "10.0.0.100"
PORT, MEMBER_PORT = 53, 5353
MGMT_CONTROLLER = "10.99.0.254"
BACKENDS = ("h1", "h2", "h3")


def agent_config(topo: FabricTopo, name: str, hl_port: int, key_file: Path) -> dict[str, Any]:
    """One UDP app (VIP dns) per backend, checked every 0.3 s by a request its responder must answer."""
    return {
        "host_id": name,
        "key_file": str(key_file),
        "controllers": [f"{MGMT_CONTROLLER}:{hl_port}"],
        "listen": f"{topo.mgmt_ip(name)}:9101",
        "hb_period": 1.0,
        "apps": [
            {
                "vip": DNS,
                "vport": PORT,
                "proto": "udp",
                "pip": topo.host_ip(name),
                "pport": MEMBER_PORT,
                "capacity": 10,
                "health": {"type": "udp", "send": "health", "expect": name, "interval": 0.3, "timeout": 0.25},
                "load": {"type": "static", "value": 0},
            }
        ],
    }


@pytest.fixture(scope="module")
def agent_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Lab, dict[str, subprocess.Popen[bytes]]]]:
    """The fabric lab with a management network, VIP dns (UDP) with agent members, responders and agents."""
    workdir = tmp_path_factory.mktemp("udp-agent-lab")
    key_file = workdir / "hl.key"
    key_file.write_text(secrets.token_hex(32))
    hl_port = free_port()
    topo = FabricTopo(clients=3, backends=3, mgmt=True)
    members = [dict(m, health="agent") for m in topo.members(port=MEMBER_PORT)]
    vip = {"name": "dns", "address": DNS, "port": PORT, "protocol": "udp", "idle_timeout": 3, "members": members}
    health = {"enabled": True, "listen_host": "0.0.0.0", "listen_port": hl_port, "key_file": str(key_file)}
    with Lab(
        topo, lab_config(topo, [vip], health=health), workdir=str(workdir), ofp_port=free_port(), rest_port=free_port()
    ) as lab:
        lab.wait_switches_connected()
        responders = start_responders(lab, MEMBER_PORT)
        for name in BACKENDS:
            lab.start_agent(name, agent_config(topo, name, hl_port, Path(lab.host_key_file(name, key_file))))
        wait_for(lambda: allotted(lab) == set(BACKENDS), timeout=20, what="every UDP member healthy and allotted")
        yield lab, responders


def allotted(lab: Lab) -> set[str]:
    """The members with a share of VIP dns's allotment."""
    return {name for name, value in lab.rest("GET", "/v1/vips/dns/allotment")["values"].items() if value > 0}


def query(lab: Lab, count: int, sport: int) -> dict[str, Any]:
    """``count`` new flows from c1, one request each, from ports ``sport``, ``sport`` + 1, ..."""
    return lab.collect_client(start_client(lab, "c1", ["query", DNS, PORT, "--count", count, "--sport", sport]), 60)


def test_a_udp_check_takes_a_silent_responder_out_of_the_allotment(
    agent_lab: tuple[Lab, dict[str, subprocess.Popen[bytes]]],
) -> None:
    lab, responders = agent_lab
    before = query(lab, 60, 20000)
    assert before["lost"] == 0 and set(before["served_by"]) == set(BACKENDS), before
    lab.stop_process(responders["h2"])
    wait_for(lambda: allotted(lab) == {"h1", "h3"}, timeout=10, what="h2 out of the allotment once its check fails")
    after = query(lab, 60, 21000)
    assert after["lost"] == 0 and set(after["served_by"]) == {"h1", "h3"}, after
