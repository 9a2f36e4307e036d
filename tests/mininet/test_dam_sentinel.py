"""The controller on Redis Sentinel: the primary is SIGKILLed under constant load from every client (downloads and a
new-connection loop, tests/lib/fault_load.py), and no established connection breaks."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from nlb_sdn.dam.atoms import ROUTE_PREFIX, parse_route_key
from nlb_sdn.lab.harness import Lab, wait_for
from tests.lib.fault_load import FaultLoad
from tests.lib.lab import affinity_vip, needs_lab, open_connections
from tests.lib.net import free_port
from tests.lib.redis_server import DOWN_AFTER_MS, FAILOVER_TIMEOUT_MS, SentinelGroup
from topologies import FabricTopo, lab_config

pytestmark = [pytest.mark.mininet, needs_lab]

PREFIX = "sentinellab:"
DOWNLOADS = 8
SIZE, RATE = 3_000_000, 250_000
"""Downloads of 12 s, established before the kill and ending after the promotion."""
LOAD_S = 14.0
"""Seconds of the new-connection loop on every client, across the kill and the promotion."""
FOLLOW_TIMEOUT = (DOWN_AFTER_MS + FAILOVER_TIMEOUT_MS) / 1000 + 5
"""Seconds the controller may take to follow the promoted replica (its DAM maintenance runs once a second)."""


@pytest.fixture(scope="module")
def sentinels() -> Iterator[SentinelGroup]:
    """A primary, a replica and three Sentinels on 127.0.0.1, stopped by PID at the end."""
    group = SentinelGroup()
    group.start()
    try:
        yield group
    finally:
        group.cleanup()


@pytest.fixture(scope="module")
def sentinel_lab(sentinels: SentinelGroup, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """A lab whose controller keeps its DAM and its operator state on the Sentinel-watched primary."""
    topo = FabricTopo(clients=4, backends=3)
    vips = [affinity_vip(topo)]
    config = lab_config(
        topo,
        vips,
        dam={"backend": "redis", "url": sentinels.url, "prefix": PREFIX},
        state={"backend": "redis", "url": sentinels.url, "prefix": PREFIX},
    )
    lab = Lab(
        topo, config, workdir=str(tmp_path_factory.mktemp("sentinel-lab")), ofp_port=free_port(), rest_port=free_port()
    )
    with lab:
        lab.wait_switches_connected()
        yield lab


def _dam(lab: Lab) -> dict:
    """The controller's DAM statistics."""
    return lab.rest("GET", "/v1/stats")["dam"]


def test_killing_the_primary_under_load_breaks_no_connection(sentinel_lab: Lab, sentinels: SentinelGroup) -> None:
    open_connections(sentinel_lab, "c1", 10)
    assert _dam(sentinel_lab)["degraded"] is False
    load = FaultLoad(sentinel_lab, duration=LOAD_S, downloads=DOWNLOADS, size=SIZE, rate=RATE)
    load.start()
    load.wait_flowing()
    killed_at = time.time()
    sentinels.primary.kill()
    # New connections while the Sentinels agree and promote: decided locally, every one served.
    during = open_connections(sentinel_lab, "c2", 40, concurrency=4)
    assert sum(during["served_by"].values()) == 40
    wait_for(lambda: sentinels.primary_port() == sentinels.replica.port, timeout=FOLLOW_TIMEOUT, what="promotion")
    wait_for(
        lambda: not _dam(sentinel_lab)["degraded"] and _dam(sentinel_lab)["queued"] == 0,
        timeout=FOLLOW_TIMEOUT,
        what="the controller's DAM to follow the promoted replica",
    )

    figures = load.finish()
    print(f"Sentinel failover figures: broken={figures.broken} gaps={[round(g, 2) for g in figures.gaps]}")
    assert figures.broken == 0, f"{figures.broken} of {DOWNLOADS} downloads broke"
    assert figures.spans(killed_at), "load from every client on both sides of the kill"

    after = open_connections(sentinel_lab, "c3", 10)
    assert sum(after["served_by"].values()) == 10
    promoted = redis.Redis(port=sentinels.replica.port)
    routes = [key.decode()[len(PREFIX) :] for key in promoted.scan_iter(match=PREFIX + ROUTE_PREFIX + "*", count=1000)]
    clients = {parse_route_key(key)[0] for key in routes}
    assert {"10.0.0.2", "10.0.0.3"} <= clients, clients  # replayed from the failover, and written after it
    dam = _dam(sentinel_lab)
    assert dam["replayed"] >= 1 and dam["data_losses"] == 0 and dam["dropped_writes"] == 0, dam
    # The operator state follows too: a REST change is stored on the promoted replica.
    sentinel_lab.rest("PUT", "/v1/vips/web/members/h3", {"weight": 5})
    stored = promoted.hget(PREFIX + "state", "document")
    assert stored is not None and b'"weight": 5' in stored
    promoted.close()
