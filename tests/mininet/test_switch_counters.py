"""``switch_tracking: counters`` in the fabric lab: no packet-in per connection, weights followed, drains complete."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from nlb_sdn.lab.harness import Lab, wait_for
from tests.lib.lab import VIP, counter_delta, needs_lab, open_connections, packet_ins, web_vip
from tests.lib.net import free_port
from topologies import FabricTopo, lab_config

pytestmark = [pytest.mark.mininet, needs_lab]

WEIGHTS = {"h1": 40, "h2": 35, "h3": 25}
WEIGHT_SLOTS = {"h1": 26, "h2": 22, "h3": 16}
CLIENTS = ("c1", "c2")
IDLE = 4


@pytest.fixture(scope="module")
def counters_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """The fabric lab with VIP web dispatched and conntrack-pinned by the switches, tracked by counters."""
    topo = FabricTopo(clients=2, backends=3)
    vip = web_vip(topo, WEIGHTS, idle_timeout=IDLE) | {
        "dispatch": "switch",
        "switch_pinning": "conntrack",
        "switch_tracking": "counters",
    }
    config = lab_config(topo, [vip], switch_sync_period=0.5)
    lab = Lab(
        topo, config, workdir=str(tmp_path_factory.mktemp("counters-lab")), ofp_port=free_port(), rest_port=free_port()
    )
    with lab:
        lab.wait_switches_connected()
        wait_for(
            lambda: lab.rest("GET", "/v1/stats")["switch_dispatch"]["slots"].get("web") == WEIGHT_SLOTS,
            timeout=20,
            what="every member healthy and in the VIP's group at its weight",
        )
        yield lab


def counted(lab: Lab) -> dict[str, Any]:
    """The controller's estimate of each member's live connections."""
    return dict(lab.rest("GET", "/v1/stats")["switch_dispatch"]["counted"].get("web", {}))


def current(lab: Lab, member: str) -> str:
    """A member's current load-balancing state."""
    return str(lab.rest("GET", f"/v1/vips/web/members/{member}/state")["current"])


def test_200_connections_reach_no_controller_and_follow_the_weights(counters_lab: Lab) -> None:
    before = packet_ins(counters_lab)
    served: dict[str, int] = {}
    for client in CLIENTS:
        for name, hits in open_connections(counters_lab, client, 100, concurrency=8)["served_by"].items():
            served[name] = served.get(name, 0) + hits
    delta = counter_delta(before, packet_ins(counters_lab))
    assert delta.get("total", 0) == delta.get("arp", 0), delta
    assert delta.get("conntrack_copy", 0) == 0 and delta.get("new_connection", 0) == 0, delta
    assert sum(served.values()) == 200
    for name, weight in WEIGHTS.items():
        assert abs(100.0 * served.get(name, 0) / 200 - weight) <= 10.0, served
    assert counters_lab.rest("GET", "/v1/connections?vip=web")["count"] == 0
    assert counters_lab.rest("GET", "/v1/stats")["errors"] == {}


def test_a_draining_member_finishes_its_downloads_then_turns_drained(counters_lab: Lab) -> None:
    wait_for(
        lambda: not any(counted(counters_lab).values()), timeout=IDLE + 10, what="the earlier connections to be gone"
    )
    downloads = [
        counters_lab.start_client(client, ["download", VIP, "--bytes", 5_000_000, "--rate", 1_000_000, "--timeout", 60])
        for client in CLIENTS
        for _ in range(3)
    ]
    wait_for(lambda: sum(counted(counters_lab).values()) >= 1, timeout=10, what="the downloads counted")
    loaded = wait_for(
        lambda: [name for name, count in counted(counters_lab).items() if count > 0],
        timeout=10,
        what="a member with counted connections",
    )
    member = loaded[0]
    counters_lab.rest("PUT", f"/v1/vips/web/members/{member}/state", {"state": "draining"})
    try:
        assert current(counters_lab, member) == "draining"
        results = [counters_lab.collect_client(download, timeout=90) for download in downloads]
        assert all(r["ok"] and r["bytes"] == 5_000_000 for r in results), results
        wait_for(
            lambda: current(counters_lab, member) == "drained",
            timeout=IDLE + 10,
            what=f"{member} drained once its connections ended",
        )
    finally:
        counters_lab.rest("PUT", f"/v1/vips/web/members/{member}/state", {"state": "active"})
