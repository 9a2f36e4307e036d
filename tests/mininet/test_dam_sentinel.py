"""The controller on Redis Sentinel: the primary is SIGKILLed under load, and no connection breaks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from nlb_sdn.dam.atoms import ROUTE_PREFIX, parse_route_key
from nlb_sdn.lab.harness import Lab, wait_for
from tests.lib.lab import affinity_vip, needs_lab, open_connections, start_downloads
from tests.lib.net import free_port
from tests.lib.redis_server import DOWN_AFTER_MS, FAILOVER_TIMEOUT_MS, SentinelGroup
from topologies import FabricTopo, lab_config

pytestmark = [pytest.mark.mininet, needs_lab]

PREFIX = "sentinellab:"
DOWNLOADS = 8
SIZE = 2_500_000
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
    transfers = start_downloads(sentinel_lab, DOWNLOADS, SIZE, 500_000)

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

    results = [sentinel_lab.collect_client(proc, timeout=90) for proc in transfers]
    broken = [r for r in results if not r["ok"] or r["bytes"] != SIZE]
    assert broken == [], f"{len(broken)} of {DOWNLOADS} downloads broke"

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
