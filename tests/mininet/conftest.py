"""Fixtures for the Mininet lab tests: one fabric lab with the real controller, shared by a module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from nlb_sdn.lab.harness import Lab
from tests.lib.lab import web_vip
from tests.lib.net import free_port
from tests.lib.redis_server import RedisServer
from topologies import FabricTopo, lab_config


@pytest.fixture(scope="module")
def fabric_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """The fabric lab (3 clients, 3 backends, 2 edges, 2 cores) with the nlb_sdn controller, switches connected."""
    topo = FabricTopo(clients=3, backends=3)
    config = lab_config(topo, [web_vip(topo, idle_timeout=5)])
    lab = Lab(
        topo, config, workdir=str(tmp_path_factory.mktemp("fabric-lab")), ofp_port=free_port(), rest_port=free_port()
    )
    with lab:
        lab.wait_switches_connected()
        yield lab


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    """A private redis-server on a free loopback port for one test module, stopped and removed after it."""
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
        server.cleanup()
