"""Switch-resident dispatch end to end in the fabric lab: weights, no packet-ins, weight changes, drains under load."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

import pytest

from nlb_sdn.config import endpoint_id
from nlb_sdn.lab.harness import Lab, run, wait_for
from tests.lib.lab import (
    VIP,
    connection_count,
    connections_of,
    counter_delta,
    needs_lab,
    open_connections,
    packet_ins,
    web_vip,
)
from tests.lib.net import free_port
from topologies import FabricTopo, lab_config

pytestmark = [pytest.mark.mininet, needs_lab]

WEIGHTS = {"h1": 40, "h2": 35, "h3": 25}
STICKY = "10.0.0.101"
AUDITED = "10.0.0.102"
AUDITED_PORT = 8081
CLIENTS = ("c1", "c2", "c3")
WEIGHT_SLOTS = {"h1": 26, "h2": 22, "h3": 16}  # 40/35/25 of 64 buckets, largest remainder


@pytest.fixture(scope="module")
def switch_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """The fabric lab with VIP web dispatched by the switches (weights 40/35/25)."""
    topo = FabricTopo(clients=3, backends=3)
    vip = web_vip(topo, WEIGHTS, idle_timeout=10) | {"dispatch": "switch"}
    sticky = web_vip(topo, {name: 1 for name in WEIGHTS}) | {
        "name": "sticky",
        "address": STICKY,
        "dispatch": "switch",
        "affinity": "client_ip",
    }
    for member in sticky["members"]:
        member["port"] = 8080  # its own endpoints: see the conntrack notes in docs/pipeline.md
    audited = {
        "name": "audited",
        "address": AUDITED,
        "port": 80,
        "idle_timeout": 2,
        "dispatch": "switch",
        "members": topo.members(port=AUDITED_PORT),
    }
    config = lab_config(topo, [vip, sticky, audited], switch_sync_period=0.5)
    lab = Lab(
        topo, config, workdir=str(tmp_path_factory.mktemp("switch-lab")), ofp_port=free_port(), rest_port=free_port()
    )
    with lab:
        lab.wait_switches_connected()
        wait_for(
            lambda: lab.rest("GET", "/v1/stats")["switch_dispatch"]["slots"].get("web") == WEIGHT_SLOTS,
            timeout=20,
            what="every member healthy and in the VIP's group at its weight",
        )
        yield lab


connections_from = partial(open_connections, concurrency=8)


def set_weights(lab: Lab, weights: dict[str, int]) -> None:
    """Change the members' weights through REST and wait until the switches' groups carry them."""
    for name, weight in weights.items():
        lab.rest("PUT", f"/v1/vips/web/members/{name}", {"weight": weight})
    total = sum(weights.values())
    wait_for(
        lambda: all(
            abs(lab.rest("GET", "/v1/stats")["switch_dispatch"]["slots"]["web"][name] - 64 * weight / total) <= 1
            for name, weight in weights.items()
        ),
        timeout=10,
        what="the new weights in the group",
    )


def test_switch_dispatch_follows_40_35_25_without_the_controller(switch_lab: Lab):
    before = packet_ins(switch_lab)
    served: dict[str, int] = {}
    for client in CLIENTS:  # 3 x 1000: the hash's own noise over 1,000 would be about 1.5 points (one sigma)
        for name, hits in connections_from(switch_lab, client, 1000)["served_by"].items():
            served[name] = served.get(name, 0) + hits
    assert sum(served.values()) == 3000
    for name, weight in WEIGHTS.items():
        assert abs(100.0 * served.get(name, 0) / 3000 - weight) <= 3.0, served
    after = packet_ins(switch_lab)
    delta = counter_delta(before, after)
    assert delta.get("new_connection", 0) == 0, delta
    assert delta["total"] == delta.get("arp", 0) + delta["conntrack_copy"], "only copies reach the controller"
    assert 6000 <= delta["conntrack_copy"] <= 6300, delta  # a copy of each SYN and of each client's FIN
    # Their end copies end them at once; a copy the switch dropped under load is made up by the connection's audit
    # entry (after idle_timeout, then idle for idle_timeout: 2 x 10 s).
    wait_for(
        lambda: connection_count(switch_lab) == 0,
        timeout=25,
        what="every ended connection to leave the controller's table",
    )
    assert switch_lab.rest("GET", "/v1/stats")["errors"] == {}


def test_the_controller_learns_switch_dispatched_connections(switch_lab: Lab):
    download = switch_lab.start_client(
        "c1", ["download", VIP, "--bytes", 4_000_000, "--rate", 1_000_000, "--timeout", 60]
    )
    rows = wait_for(
        lambda: [
            c for c in connections_of(switch_lab) if c["client"].startswith("10.0.0.1:") and c["dispatch"] == "switch"
        ],
        timeout=10,
        what="the download in the connection table",
    )
    result = switch_lab.collect_client(download, timeout=60)
    assert result["ok"] and result["bytes"] == 4_000_000 and result["served_by"] in {r["member"] for r in rows}


def test_changing_weights_under_load_breaks_no_established_connection(switch_lab: Lab):
    downloads = [
        switch_lab.start_client(client, ["download", VIP, "--bytes", 6_000_000, "--rate", 2_000_000, "--timeout", 60])
        for client in CLIENTS
        for _ in range(2)
    ]
    wait_for(
        lambda: len(connections_of(switch_lab)) >= len(downloads), timeout=10, what="the downloads to be established"
    )
    try:
        set_weights(switch_lab, {"h1": 0, "h2": 0, "h3": 1})
        summary = connections_from(switch_lab, "c1", 60)
        assert set(summary["served_by"]) == {"h3"}, summary
        set_weights(switch_lab, {"h1": 1, "h2": 1, "h3": 0})
        assert "h3" not in connections_from(switch_lab, "c2", 60)["served_by"]
    finally:
        set_weights(switch_lab, WEIGHTS)
    results = [switch_lab.collect_client(download, timeout=90) for download in downloads]
    assert all(r["ok"] and r["bytes"] == 6_000_000 for r in results), results


def test_a_drained_member_gets_no_new_connection_and_finishes_its_own(switch_lab: Lab):
    downloads = [
        switch_lab.start_client(client, ["download", VIP, "--bytes", 4_000_000, "--rate", 1_500_000, "--timeout", 60])
        for client in CLIENTS
        for _ in range(2)
    ]
    wait_for(
        lambda: len(connections_of(switch_lab)) >= len(downloads), timeout=10, what="the downloads to be established"
    )
    switch_lab.rest("PUT", "/v1/vips/web/members/h1/state", {"state": "draining"})
    try:
        wait_for(
            lambda: switch_lab.rest("GET", "/v1/stats")["switch_dispatch"]["slots"]["web"]["h1"] == 0,
            timeout=10,
            what="h1 to leave the group",
        )
        summary = connections_from(switch_lab, "c3", 200)
        assert "h1" not in summary["served_by"], summary
        results = [switch_lab.collect_client(download, timeout=90) for download in downloads]
        assert all(r["ok"] and r["bytes"] == 4_000_000 for r in results), results
    finally:
        switch_lab.rest("PUT", "/v1/vips/web/members/h1/state", {"state": "active"})


def test_client_ip_affinity_in_the_switch_keeps_each_client_on_one_member(switch_lab: Lab):
    members = {}
    for client in CLIENTS:
        first = switch_lab.run_client(client, ["connections", STICKY, "--count", 1, "--timeout", 10])
        summary = switch_lab.run_client(
            client, ["connections", STICKY, "--count", 40, "--concurrency", 4, "--timeout", 60]
        )
        assert summary["errors"] == 0 and summary["served_by"] == {next(iter(first["served_by"])): 40}, summary
        members[client] = next(iter(summary["served_by"]))

    def learned() -> dict[str, str]:
        rows = switch_lab.rest("GET", "/v1/sessions?vip=sticky")["sessions"]
        return {row["client"]: row["member"] for row in rows if row["type"] == "client_ip"}

    rows = wait_for(lambda: len(learned()) == len(CLIENTS) and learned(), timeout=10, what="the learned sessions")
    assert sorted(rows.values()) == sorted(members.values()), (rows, members)


def test_conntrack_connections_whose_end_copies_are_lost_leave_after_their_audit_entries_idle_out(switch_lab: Lab):
    """The switches send no FIN/RST copies for the audited VIP's members (their entries deleted), as if every copy
    were lost: the audit entries (one per connection that lived ``idle_timeout``) still end the connections."""
    marks = {
        f"ct_mark={endpoint_id(member['address'], AUDITED_PORT):#x}"
        for member in switch_lab.topo.members(port=AUDITED_PORT)
    }
    for switch in switch_lab.topo.data_switches():
        for flow in switch_lab.dump_flows(switch, table=8):
            match = flow[flow.index("priority=") : flow.index(" actions=")]
            if "priority=210" in match and any(f"{mark}," in match for mark in marks):
                run(["ovs-ofctl", "-O", "OpenFlow13", "--strict", "del-flows", switch, f"table=8,{match}"], check=True)
    before = switch_lab.rest("GET", "/v1/stats")["switch_dispatch"]["counters"]
    summary = switch_lab.run_client("c1", ["connections", AUDITED, "--count", 20, "--concurrency", 4, "--timeout", 60])
    assert summary["errors"] == 0 and summary["ok"] == 20, summary
    assert connection_count(switch_lab, "audited") == 20, "no end copy: still listed"
    wait_for(
        lambda: connection_count(switch_lab, "audited") == 0,
        timeout=20,
        what="the audit entries to idle out and end the connections",
    )
    after = switch_lab.rest("GET", "/v1/stats")["switch_dispatch"]["counters"]
    assert after.get("conntrack_ended", 0) == before.get("conntrack_ended", 0), "no copy ended them"
    assert after["conntrack_audit_ended"] - before.get("conntrack_audit_ended", 0) == 20, after
