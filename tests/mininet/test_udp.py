"""UDP VIP services end to end in the fabric lab: a DNS-like request/response service following weights (one packet-in
per flow under controller dispatch; none on the path under switch dispatch), and a
long-lived UDP stream that stays on its member while weights change, in both dispatch modes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from nlb_sdn.lab.harness import Lab, wait_for
from nlb_sdn.lab.udp_service import start_client, start_responders
from tests.lib.lab import connections_of, counter_delta, needs_lab, packet_ins
from tests.lib.net import free_port
from topologies import FabricTopo, lab_config

pytestmark = [pytest.mark.mininet, needs_lab]

DNS = "10.0.0.100"
DNS_SWITCH = "10.0.0.101"
PORT = 53
CONTROLLER_PORT, SWITCH_PORT = 5353, 5354
WEIGHTS = {"h1": 1, "h2": 1, "h3": 2}
SWITCH_WEIGHTS = {"h1": 40, "h2": 35, "h3": 25}
SWITCH_SLOTS = {"h1": 26, "h2": 22, "h3": 16}  # 40/35/25 of 64 buckets, largest remainder
CLIENTS = ("c1", "c2", "c3")


def udp_vip(topo: FabricTopo, name: str, address: str, port: int, weights: dict[str, int], **fields: Any) -> Any:
    """A UDP VIP service on port 53 over every backend's responder on ``port``."""
    members = topo.members(port=port)
    for member in members:
        member["weight"] = weights[member["name"]]
    return {"name": name, "address": address, "port": PORT, "protocol": "udp", "members": members, **fields}


@pytest.fixture(scope="module")
def udp_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """The fabric lab with VIP dns (controller dispatch, 1/1/2) and VIP dns-switch (switch dispatch, 40/35/25)."""
    topo = FabricTopo(clients=3, backends=3)
    vips = [
        udp_vip(topo, "dns", DNS, CONTROLLER_PORT, WEIGHTS, idle_timeout=5),
        udp_vip(topo, "dns-switch", DNS_SWITCH, SWITCH_PORT, SWITCH_WEIGHTS, idle_timeout=5, dispatch="switch"),
    ]
    config = lab_config(topo, vips, switch_sync_period=0.5)
    lab = Lab(
        topo, config, workdir=str(tmp_path_factory.mktemp("udp-lab")), ofp_port=free_port(), rest_port=free_port()
    )
    with lab:
        lab.wait_switches_connected()
        start_responders(lab, CONTROLLER_PORT)
        start_responders(lab, SWITCH_PORT)
        wait_for(
            lambda: lab.rest("GET", "/v1/stats")["switch_dispatch"]["slots"].get("dns-switch") == SWITCH_SLOTS,
            timeout=20,
            what="dns-switch's group at its weights",
        )
        yield lab


def udp_client(lab: Lab, client: str, args: list[Any], timeout: float = 120.0) -> dict[str, Any]:
    """Run a UDP lab client in ``client``; its JSON summary."""
    return lab.collect_client(start_client(lab, client, args), timeout)


def shares(summaries: list[dict[str, Any]]) -> dict[str, float]:
    """The percentage of answers each member gave over several query runs."""
    served: dict[str, int] = {}
    for summary in summaries:
        for name, count in summary["served_by"].items():
            served[name] = served.get(name, 0) + count
    total = sum(served.values())
    return {name: 100.0 * count / total for name, count in served.items()}


def test_a_udp_vip_follows_weights_with_one_packet_in_per_flow(udp_lab: Lab) -> None:
    before = packet_ins(udp_lab)
    # Each request from its own source port: a port the kernel picked twice would ride the first flow's entries.
    runs = [udp_client(udp_lab, client, ["query", DNS, PORT, "--count", 200, "--sport", 20000]) for client in CLIENTS]
    assert [run["lost"] for run in runs] == [0, 0, 0], runs
    share = shares(runs)
    for name, weight in WEIGHTS.items():
        assert abs(share.get(name, 0.0) - 100.0 * weight / 4) <= 2.0, share
    delta = counter_delta(before, packet_ins(udp_lab))
    assert delta["new_connection"] == 600, delta
    assert delta.get("existing_connection", 0) + delta.get("replumb", 0) == 0, delta


def test_a_switch_dispatched_udp_vip_follows_weights_without_the_controller(udp_lab: Lab) -> None:
    before = packet_ins(udp_lab)
    runs = [
        udp_client(udp_lab, client, ["query", DNS_SWITCH, PORT, "--count", 400, "--sport", 21000]) for client in CLIENTS
    ]
    assert sum(run["lost"] for run in runs) == 0, runs
    for run in runs:  # each client's flows spread too (Open vSwitch's own group hash leaves UDP ports out)
        assert len(run["served_by"]) == 3, runs
    share = shares(runs)
    for name, weight in SWITCH_WEIGHTS.items():
        assert abs(share.get(name, 0.0) - weight) <= 5.0, share  # the switch's hash over 1,200 flows
    delta = counter_delta(before, packet_ins(udp_lab))
    assert delta.get("new_connection", 0) == 0, delta
    assert delta["total"] == delta.get("arp", 0) + delta["conntrack_copy"], "only copies reach the controller"
    assert 1140 <= delta["conntrack_copy"] <= 1200, delta  # a copy of each flow's first datagram, none of the rest


def set_weights(lab: Lab, vip: str, weights: dict[str, int]) -> None:
    """Change a VIP's members' weights through REST; for a switch-dispatched VIP, wait until its group has them."""
    for name, weight in weights.items():
        lab.rest("PUT", f"/v1/vips/{vip}/members/{name}", {"weight": weight})
    if vip == "dns-switch":
        wait_for(
            lambda: all(
                (lab.rest("GET", "/v1/stats")["switch_dispatch"]["slots"][vip][name] == 0) == (weight == 0)
                for name, weight in weights.items()
            ),
            timeout=10,
            what="the new weights in the group",
        )


@pytest.mark.parametrize(("vip", "address"), [("dns", DNS), ("dns-switch", DNS_SWITCH)])
def test_a_udp_stream_stays_on_its_member_while_weights_change(udp_lab: Lab, vip: str, address: str) -> None:
    original = WEIGHTS if vip == "dns" else SWITCH_WEIGHTS
    earlier = {c["client"] for c in connections_of(udp_lab, vip)}  # flows of earlier tests may not have idled out
    stream = start_client(udp_lab, "c1", ["stream", address, PORT, "--duration", 8])
    try:
        [row] = wait_for(
            lambda: [
                c
                for c in connections_of(udp_lab, vip)
                if c["client"].startswith("10.0.0.1:") and c["client"] not in earlier
            ],
            timeout=10,
            what="the stream in the connection table",
        )
        member = row["member"]
        set_weights(udp_lab, vip, {name: 0 if name == member else 1 for name in original})
        others = udp_client(udp_lab, "c2", ["query", address, PORT, "--count", 60])
        assert member not in others["served_by"] and others["lost"] == 0, others
        set_weights(udp_lab, vip, {name: 1 if name == member else 0 for name in original})
        set_weights(udp_lab, vip, {name: 0 if name == member else 1 for name in original})
        result = udp_lab.collect_client(stream, timeout=30)
    finally:
        set_weights(udp_lab, vip, original)
    assert result["served_by"] == {member: result["ok"]} and result["lost"] == 0, result
    assert result["ok"] >= 50, result
