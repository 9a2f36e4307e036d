"""Fixtures for the Mininet lab tests: one fabric lab with the real controller, shared by a module."""

from __future__ import annotations

import os
import shutil
import socket
from typing import Iterator

import pytest

from nlb_sdn.lab.harness import Lab
from topologies import FabricTopo, lab_config

VIP = "10.0.0.100"
WEIGHTS = {"h1": 1, "h2": 1, "h3": 2}

needs_lab = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("mnexec") is None or shutil.which("ovs-vsctl") is None,
                               reason="needs root, Open vSwitch and Mininet")


def free_port() -> int:
    """An unused TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def plumbed_since(lab: Lab, started: float, client_ip: str = "", vip: str = "web") -> list[dict]:
    """The VIP's connections the controller plumbed at or after ``started`` (``time.time()``), of one client address
    when given. Not "the keys that were not there before": a new connection may reuse the client port of a listed one.
    """
    return [c for c in lab.rest("GET", f"/v1/connections?vip={vip}")["connections"]
            if c["installed_at"] >= started and c["client"].startswith(f"{client_ip}:" if client_ip else "")]


def web_vip(topo: FabricTopo, weights: dict[str, int] = WEIGHTS, idle_timeout: int = 15) -> dict:
    """The lab's VIP service on port 80 over every backend, with the given weights."""
    members = topo.members()
    for member in members:
        member["weight"] = weights[member["name"]]
    return {"name": "web", "address": VIP, "port": 80, "idle_timeout": idle_timeout, "members": members}


@pytest.fixture(scope="module")
def fabric_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """The fabric lab (3 clients, 3 backends, 2 edges, 2 cores) with the nlb_sdn controller, switches connected."""
    topo = FabricTopo(clients=3, backends=3)
    config = lab_config(topo, [web_vip(topo, idle_timeout=5)])
    lab = Lab(topo, config, workdir=str(tmp_path_factory.mktemp("fabric-lab")), ofp_port=free_port(),
              rest_port=free_port())
    with lab:
        lab.wait_switches_connected()
        yield lab
