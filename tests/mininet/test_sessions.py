"""Sessions and rebuild in the fabric lab: client_ip affinity, per-session flows, controller restart mid-transfer."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from nlb_sdn.dam.atoms import session_key
from nlb_sdn.lab.harness import Lab, run, wait_for
from tests.lib.lab import (
    VIP,
    connection_count,
    needs_lab,
    open_connections,
    packet_ins,
    restart_controller,
    start_downloads,
)
from tests.lib.net import free_port
from topologies import FabricTopo, lab_config

pytestmark = [pytest.mark.mininet, needs_lab]

SESSION_PORT = 8080


@pytest.fixture(scope="module")
def session_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """Ten clients; VIP :80 with client_ip affinity per connection, VIP :8080 with per-session flows."""
    topo = FabricTopo(clients=10, backends=3)
    vips = [
        {
            "name": "web",
            "address": VIP,
            "port": 80,
            "affinity": "client_ip",
            "idle_timeout": 5,
            "members": topo.members(),
        },
        {
            "name": "sticky",
            "address": VIP,
            "port": SESSION_PORT,
            "affinity": "client_ip",
            "granularity": "session",
            "members": topo.members(port=SESSION_PORT),
        },
    ]
    lab = Lab(
        topo,
        lab_config(topo, vips),
        workdir=str(tmp_path_factory.mktemp("session-lab")),
        ofp_port=free_port(),
        rest_port=free_port(),
    )
    with lab:
        lab.wait_switches_connected()
        yield lab


def wait_for_revalidators() -> None:
    """Wait until Open vSwitch has revalidated every cached datapath flow against the current flow tables."""
    run(["ovs-appctl", "revalidator/wait"], check=True)


def test_client_ip_affinity_pins_one_client_while_many_clients_spread(session_lab: Lab):
    assert len(open_connections(session_lab, "c1", 100)["served_by"]) == 1
    served: dict[str, int] = {}
    for client in session_lab.topo.clients[1:]:
        summary = open_connections(session_lab, client, 33)
        assert len(summary["served_by"]) == 1, summary
        for name, count in summary["served_by"].items():
            served[name] = served.get(name, 0) + count
    assert set(served) == {"h1", "h2", "h3"}, served
    sessions = session_lab.rest("GET", "/v1/sessions?vip=web")
    assert sessions["count"] == 10
    row = sessions["sessions"][0]
    assert row["type"] == "client_ip" and row["identifier"].startswith("web@") and row["member"] in served


def test_deleting_a_session_lets_the_allotment_decide_again(session_lab: Lab):
    session_id = session_key("client_ip", "web@10.0.0.1")
    owner = next(
        s["member"] for s in session_lab.rest("GET", "/v1/sessions?vip=web")["sessions"] if s["id"] == session_id
    )
    session_lab.rest("DELETE", f"/v1/sessions/{session_id}")
    assert session_id not in {s["id"] for s in session_lab.rest("GET", "/v1/sessions?vip=web")["sessions"]}
    assert open_connections(session_lab, "c1", 5)["served_by"]  # a new session is made for c1
    assert owner


def test_per_session_flows_give_at_most_one_packet_in_per_client(session_lab: Lab):
    before = packet_ins(session_lab)
    for client in ("c2", "c3"):
        first = open_connections(session_lab, client, 1, port=SESSION_PORT)
        # The flows are in the tables before the first SYN is released, but OVS revalidates the datapath's cached
        # punt for that SYN asynchronously; a next SYN racing it would reach the controller once more.
        wait_for_revalidators()
        summary = open_connections(session_lab, client, 19, port=SESSION_PORT, concurrency=1)
        assert summary["served_by"].keys() == first["served_by"].keys(), (first, summary)
    after = packet_ins(session_lab)
    punts = {k: after.get(k, 0) - before.get(k, 0) for k in ("new_session", "session_flow_pending", "new_connection")}
    assert punts == {"new_session": 2, "session_flow_pending": 0, "new_connection": 0}, punts
    flows = [f for f in session_lab.dump_flows("s1", table=1) if "priority=150" in f]
    assert len(flows) == 2 and all("cookie=0x4" in f for f in flows), flows


def test_controller_restart_during_ten_long_transfers_breaks_none(session_lab: Lab):
    transfers = start_downloads(session_lab, 10, 3_000_000, 600_000)
    restart_controller(session_lab)
    wait_for(
        lambda: connection_count(session_lab) >= 10,
        timeout=15,
        what="the connection table rebuilt from the switches' flows",
    )
    results = [session_lab.collect_client(proc, timeout=90) for proc in transfers]
    broken = [r for r in results if not r["ok"] or r["bytes"] != 3_000_000]
    assert broken == [], broken
    stats = session_lab.rest("GET", "/v1/stats")
    assert stats["rebuilt_connections"] >= 10
    open_connections(session_lab, "c4", 10)
