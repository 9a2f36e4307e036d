"""Tunnel mode with direct server return in the fabric lab: labelled client packets, unlabelled replies from the VIP.

The VIP service is ``mode: tunnel``: the client edge s1 pushes the MPLS label of the chosen backend's host, the cores
forward on the label alone, s2 pops it; each backend holds the VIP on its loopback and answers the client directly.
Switch-to-switch links have MTU 1504 so a full-size client segment (1500 bytes of IPv4) still fits under its label.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

from nlb_sdn.flows.tunnel import host_labels
from nlb_sdn.lab.backend import pattern_sha256
from nlb_sdn.lab.harness import Lab, wait_for
from tests.lib.lab import connections_of, counter_delta, flow_counters, host_python, needs_lab, packet_ins
from tests.lib.net import free_port
from topologies import FabricTopo, lab_config

pytestmark = [pytest.mark.mininet, needs_lab]

VIP = "10.0.0.100"
BACKENDS = ("h1", "h2", "h3")
BACKEND_EDGE_TRUNKS = ("s2-eth1", "s2-eth2")
TRUNKS = ("s1-eth1", "s1-eth2", "s2-eth1", "s2-eth2", "s3-eth1", "s3-eth2", "s4-eth1", "s4-eth2")
TUNNEL_COOKIE = re.compile(r"cookie=0x3[0-9a-f]{14},")
BIG_REQUEST = """
import socket, sys
pad = "a" * 12000
with socket.create_connection((sys.argv[1], 80), timeout=15) as sock:
    sock.sendall(f"GET / HTTP/1.1\\r\\nHost: vip\\r\\nX-Pad: {pad}\\r\\nConnection: close\\r\\n\\r\\n".encode())
    reply = b""
    while chunk := sock.recv(65536):
        reply += chunk
print(reply.decode(errors="replace"))
"""


@pytest.fixture(scope="module")
def tunnel_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """The fabric lab with trunk MTU 1504 and VIP web (10.0.0.100:80) in tunnel mode over h1..h3."""
    topo = FabricTopo(clients=3, backends=3, trunk_mtu=1504)
    vip = {"name": "web", "address": VIP, "port": 80, "mode": "tunnel", "idle_timeout": 10, "members": topo.members()}
    lab = Lab(
        topo,
        lab_config(topo, [vip]),
        workdir=str(tmp_path_factory.mktemp("tunnel-lab")),
        ofp_port=free_port(),
        rest_port=free_port(),
    )
    with lab:
        lab.wait_switches_connected()
        yield lab


def download(lab: Lab, client: str, size: int) -> dict:
    """One verified pattern download through the VIP; its checksum must be the pattern's."""
    result = lab.run_client(client, ["download", VIP, "--bytes", size, "--timeout", 120], timeout=150)
    assert result["ok"] and result["bytes"] == size, result
    assert result["sha256"] == pattern_sha256(size)
    return result


def test_downloads_through_the_tunnel_complete_with_the_right_checksum(tunnel_lab: Lab):
    for client, size in (("c1", 1_000_000), ("c2", 3_000_000), ("c3", 200_000)):
        assert download(tunnel_lab, client, size)["served_by"] in BACKENDS
    summary = tunnel_lab.run_client("c1", ["connections", VIP, "--count", 30, "--concurrency", 4, "--timeout", 60])
    assert summary["ok"] == 30 and summary["errors"] == 0 and set(summary["served_by"]) <= set(BACKENDS), summary


def test_connections_show_tunnel_mode_and_the_host_label(tunnel_lab: Lab):
    transfer = tunnel_lab.start_client(
        "c2", ["download", VIP, "--bytes", 4_000_000, "--rate", 2_000_000, "--timeout", 60]
    )
    try:
        conns = wait_for(
            lambda: [c for c in connections_of(tunnel_lab) if c["client"].startswith("10.0.0.2:")],
            timeout=10,
            what="c2's connection",
        )
    finally:
        result = tunnel_lab.collect_client(transfer, timeout=90)
    assert result["ok"], result
    labels = host_labels(tunnel_lab.model.fabric)
    macs = {host.name: host.mac for host in tunnel_lab.model.fabric.hosts}
    for conn in conns:
        assert conn["mode"] == "tunnel" and conn["label"] == labels[macs[conn["member"]]], conn
        assert conn["cookie"].startswith("0x03")


def test_replies_come_from_the_vip_and_bypass_every_vip_flow_and_the_controller(tunnel_lab: Lab):
    before = packet_ins(tunnel_lab)
    client_tx_before = int(tunnel_lab.host_run("c3", ["cat", "/sys/class/net/c3-eth0/statistics/tx_packets"]).stdout)
    captures = [
        subprocess.Popen(
            ["tcpdump", "-i", trunk, "-nn", "-l", "tcp port 80 or mpls"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        for trunk in BACKEND_EDGE_TRUNKS
    ]
    lines: list[str] = []
    try:
        time.sleep(1.0)
        size = 2_000_000
        result = download(tunnel_lab, "c3", size)
    finally:
        time.sleep(0.5)
        for capture in captures:
            capture.send_signal(signal.SIGINT)
            lines += capture.communicate(timeout=10)[0].splitlines()
    after = packet_ins(tunnel_lab)
    delta = counter_delta(before, after)
    assert delta.get("new_connection") == 1 and delta["total"] - delta.get("arp", 0) == 1, delta

    member = result["served_by"]
    member_address = next(h.ip for h in tunnel_lab.model.fabric.hosts if h.name == member)
    label = host_labels(tunnel_lab.model.fabric)[next(h.mac for h in tunnel_lab.model.fabric.hosts if h.name == member)]
    # On the backend edge's trunks: host->client packets carry source VIP, and none comes from the member's address.
    assert [line for line in lines if f"IP {VIP}.80 > 10.0.0.3." in line], lines[:20]
    assert not [line for line in lines if f"IP {member_address}.80 >" in line], lines[:20]
    # Client->host packets cross the trunks under the member host's label, and only those.
    labelled = [line for line in lines if "MPLS" in line]
    assert labelled and all(f"label {label}," in line and "> 10.0.0.100.80" in line for line in labelled), labelled[:5]

    # Flow counters: one table-1 entry at the client edge counting client->VIP packets only; no reverse entries.
    newest = max(
        (c for c in connections_of(tunnel_lab) if c["client"].startswith("10.0.0.3:")), key=lambda c: c["installed_at"]
    )
    client_port = newest["client"].split(":")[1]
    [entry] = [
        f
        for f in tunnel_lab.dump_flows("s1", table=1)
        if TUNNEL_COOKIE.search(f) and "nw_src=10.0.0.3," in f and f"tp_src={client_port}," in f
    ]
    packets, byte_count = flow_counters(entry)
    client_tx = int(tunnel_lab.host_run("c3", ["cat", "/sys/class/net/c3-eth0/statistics/tx_packets"]).stdout)
    assert 0 < packets <= client_tx - client_tx_before
    assert byte_count < size / 10, "the connection entry must not see the download's data"
    for switch in ("s1", "s2", "s3", "s4"):
        assert not [f for f in tunnel_lab.dump_flows(switch, table=2) if "priority=200" in f]
        if switch != "s1":
            assert not [f for f in tunnel_lab.dump_flows(switch, table=1) if "priority=200" in f]
    # The member's replies never matched a VIP entry of its edge's table 0.
    vip_entries = [f for f in tunnel_lab.dump_flows("s2", table=0) if "nw_dst=10.0.0.100" in f and "tp_dst=80" in f]
    assert vip_entries and all(flow_counters(f)[0] == 0 for f in vip_entries), vip_entries


def test_full_size_client_segments_fit_the_trunks_and_a_large_download_works(tunnel_lab: Lab):
    for trunk in TRUNKS:
        assert "mtu 1504" in subprocess.run(["ip", "link", "show", trunk], capture_output=True, text=True).stdout
    reply = host_python(tunnel_lab, "c1", BIG_REQUEST, VIP, timeout=30)
    assert reply.returncode == 0 and "200 OK" in reply.stdout and "X-Served-By: h" in reply.stdout, reply
    download(tunnel_lab, "c1", 30_000_000)
