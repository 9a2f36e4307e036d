"""The load balancer end to end in the fabric lab: reachability, weights, bypass, ARP, member removal, REST errors."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from nlb_sdn.lab.harness import Lab, RestError, wait_for
from tests.lib.lab import (
    VIP,
    WEIGHTS,
    counter_delta,
    host_python,
    needs_lab,
    open_connections,
    packet_ins,
    plumbed_since,
)
from tests.lib.metrics import samples, value
from tests.lib.net import free_port

pytestmark = [pytest.mark.mininet, needs_lab]

CLIENTS = ("c1", "c2", "c3")
FROM_PORT = r"""
import json, socket, sys
sock = socket.create_connection((sys.argv[1], 80), timeout=10, source_address=("", int(sys.argv[2])))
sock.sendall(b"GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
data = b""
while chunk := sock.recv(65536):
    data += chunk
head = data.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
print(json.dumps({k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:])}))
"""


def test_vip_is_reachable_from_every_client(fabric_lab: Lab):
    for client in CLIENTS:
        summary = open_connections(fabric_lab, client, 20)
        assert set(summary["served_by"]) <= set(WEIGHTS)


def test_distribution_follows_weights_1_1_2(fabric_lab: Lab):
    served: dict[str, int] = {}
    for client, count in zip(CLIENTS, (134, 133, 133), strict=True):
        for name, hits in open_connections(fabric_lab, client, count, concurrency=8)["served_by"].items():
            served[name] = served.get(name, 0) + hits
    total = sum(served.values())
    assert total == 400
    weight_sum = sum(WEIGHTS.values())
    for name, weight in WEIGHTS.items():
        share = 100.0 * served.get(name, 0) / total
        assert abs(share - 100.0 * weight / weight_sum) <= 5.0, served


def test_exactly_one_packet_in_per_connection_also_across_a_20mb_transfer(fabric_lab: Lab):
    before = packet_ins(fabric_lab)
    download = fabric_lab.run_client("c1", ["download", VIP, "--bytes", 20_000_000, "--timeout", 120])
    assert download["ok"] and download["bytes"] == 20_000_000, download
    open_connections(fabric_lab, "c2", 100)
    after = packet_ins(fabric_lab)
    delta = counter_delta(before, after)
    assert delta["new_connection"] == 101, delta
    assert delta["total"] - delta.get("arp", 0) == 101, delta


def test_arp_for_the_vip_is_answered_by_the_controller(fabric_lab: Lab):
    fabric_lab.host_run("c3", ["ip", "neigh", "flush", "dev", "c3-eth0"])
    arp_before = packet_ins(fabric_lab).get("arp", 0)
    open_connections(fabric_lab, "c3", 1)
    neigh = fabric_lab.host_run("c3", ["ip", "neigh", "show", VIP]).stdout
    vip_mac = fabric_lab.rest("GET", "/v1/vips/web")["mac"]
    assert f"lladdr {vip_mac}" in neigh, neigh
    assert packet_ins(fabric_lab).get("arp", 0) > arp_before


def test_member_removed_during_a_long_transfer(fabric_lab: Lab):
    started = time.time()
    transfer = fabric_lab.start_client(
        "c2", ["download", VIP, "--bytes", 8_000_000, "--rate", 2_000_000, "--timeout", 60]
    )
    conns = wait_for(
        lambda: plumbed_since(fabric_lab, started, "10.0.0.2"), timeout=10, what="the transfer's connection"
    )
    member = conns[0]["member"]
    removed = fabric_lab.rest("GET", f"/v1/vips/web/members/{member}")
    fabric_lab.rest("DELETE", f"/v1/vips/web/members/{member}")
    try:
        summary = open_connections(fabric_lab, "c1", 60)
        assert member not in summary["served_by"], summary
        result = fabric_lab.collect_client(transfer, timeout=90)
        assert result["ok"] and result["bytes"] == 8_000_000 and result["served_by"] == member, result
    finally:
        fabric_lab.rest("POST", "/v1/vips/web/members", removed)
    assert member in open_connections(fabric_lab, "c1", 8)["served_by"]


def test_a_new_connection_from_a_reused_client_port_is_balanced_again_not_sent_to_a_drained_member(fabric_lab: Lab):
    """The member closes first, so the client may reuse its port at once, while the ended connection's entries
    still live (idle_timeout): the new connection's SYN must reach the classifier, not ride them to the old member."""
    port = free_port()

    def served_by() -> str:
        out = host_python(fabric_lab, "c1", FROM_PORT, VIP, port)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)["x-served-by"]

    member = served_by()
    before = packet_ins(fabric_lab).get("port_reuse", 0)
    fabric_lab.rest("PUT", f"/v1/vips/web/members/{member}/state", {"state": "draining"})
    try:
        assert served_by() != member
        assert packet_ins(fabric_lab)["port_reuse"] == before + 1
    finally:
        fabric_lab.rest("PUT", f"/v1/vips/web/members/{member}/state", {"state": "active"})


@pytest.mark.parametrize(
    "method, path, body, status",
    [
        ("POST", "/v1/vips", b"{not json", 400),
        ("POST", "/v1/vips", {"name": "x", "address": "10.0.0.200", "port": 80, "colour": "red"}, 400),
        ("POST", "/v1/vips", {"name": "x", "address": "10.0.0.300", "port": 80}, 400),
        ("POST", "/v1/vips", {"name": "x", "address": "10.0.0.200", "port": 0}, 400),
        ("POST", "/v1/vips", {"name": "web", "address": "10.0.0.201", "port": 80}, 409),
        ("PUT", "/v1/vips/web/members/h1", {"weight": -1}, 400),
        ("DELETE", "/v1/vips/nope", None, 404),
    ],
)
def test_bad_rest_input_gets_a_4xx_with_a_reason(fabric_lab: Lab, method, path, body, status):
    data = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(
        f"http://127.0.0.1:{fabric_lab.rest_port}{path}",
        data=data,
        method=method,
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=5)
    assert err.value.code == status
    payload = json.loads(err.value.read())
    assert payload["error"] and payload["detail"]
    assert fabric_lab.rest("GET", "/v1/vips/web")["members"][0]["weight"] == 1


def test_connection_table_follows_flow_removal(fabric_lab: Lab):
    open_connections(fabric_lab, "c1", 10)
    assert fabric_lab.rest("GET", "/v1/connections")["count"] >= 10
    wait_for(
        lambda: fabric_lab.rest("GET", "/v1/connections")["count"] == 0,
        timeout=30,
        what="every connection flow to idle out",
    )
    for switch in ("s1", "s2", "s3", "s4"):
        flows = fabric_lab.dump_flows(switch, table=1) + fabric_lab.dump_flows(switch, table=2)
        assert not [f for f in flows if "priority=200" in f], flows
    stats = fabric_lab.rest("GET", "/v1/stats")
    assert stats["connections"]["per_member"] == {} and stats["errors"] == {}


def test_rest_reports_unknown_member(fabric_lab: Lab):
    with pytest.raises(RestError) as err:
        fabric_lab.rest("PUT", "/v1/vips/web/members/nobody", {"weight": 2})
    assert err.value.status == 404


def test_restarted_controller_removes_flows_the_model_no_longer_wants(fabric_lab: Lab):
    stale = "cookie=0x0101000900000000,table=0,priority=200,tcp,nw_dst=10.0.0.200,tp_dst=80,actions=goto_table:1"
    subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "add-flow", "s1", stale], check=True, timeout=10)
    assert any("10.0.0.200" in flow for flow in fabric_lab.dump_flows("s1", table=0))
    fabric_lab.stop_controller()
    fabric_lab.start_controller()
    fabric_lab.wait_switches_connected()
    wait_for(
        lambda: not any("10.0.0.200" in flow for flow in fabric_lab.dump_flows("s1", table=0)),
        timeout=10,
        what="the stale VIP entry to be removed",
    )
    assert any("nw_dst=10.0.0.100" in flow for flow in fabric_lab.dump_flows("s1", table=0))
    open_connections(fabric_lab, "c1", 10)


def test_controller_metrics_show_packet_ins_and_per_member_connections(fabric_lab: Lab):
    before = packet_ins(fabric_lab).get("new_connection", 0)
    open_connections(fabric_lab, "c1", 30, concurrency=6)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{fabric_lab.rest_port}/metrics", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        found = samples(response.read())
    assert value(found, "nlb_sdn_packet_ins_total", kind="new_connection") >= before + 30
    assert value(found, "nlb_sdn_switches_connected") == 4
    per_member = {name: value(found, "nlb_sdn_member_connections", vip="web", member=name) for name in WEIGHTS}
    assert sum(per_member.values()) > 0, per_member  # the connections idle out 5 s after they close
    assert sum(per_member.values()) == value(found, "nlb_sdn_vip_connections", vip="web")
    assert value(found, "nlb_sdn_flow_mods_total") >= 60
