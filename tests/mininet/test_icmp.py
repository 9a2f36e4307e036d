"""ICMP through VIPs on a real Open vSwitch (issue 15 item 3): ping to a VIP, and path MTU discovery through a nat VIP.

The client c1 sits behind router g1, whose link toward it has MTU 1400 (``topologies/pmtu.py``). A member's
full-size segments do not fit: g1 sends ICMP "fragmentation needed" to their source, the VIP. With
``icmp.relay_errors`` the controller sends it on to the member, quoting the member's own packet, and the member lowers
its path MTU; without it the error dies at the switch and the download stalls for good (a PMTU black hole: Linux does
no MTU probing by default). Each download is bounded in time; the stalled one shows the lab really needs the relay.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from nlb_sdn.lab.harness import Lab
from tests.lib.lab import counter_delta, needs_lab, packet_ins
from tests.lib.net import free_port
from topologies import lab_config
from topologies.pmtu import ROUTER, SMALL_MTU, PmtuTopo

pytestmark = [pytest.mark.mininet, needs_lab]

RELAYING, SILENT, SWITCHED = "10.0.0.100", "10.0.0.101", "10.0.0.102"
ICMP_ON = {"answer_ping": True, "relay_errors": True}
ICMP_OFF = {"answer_ping": False, "relay_errors": False}
DOWNLOAD_BYTES = 4_000_000
DOWNLOAD_TIMEOUT = 30
STALL_TIMEOUT = 8
COMMAND_TIMEOUT = 20.0


def vips(topo: PmtuTopo) -> list[dict[str, Any]]:
    """Three VIPs over h1 and h2: relaying ICMP (controller dispatch), silent (both switched off), relaying under switch
    dispatch with conntrack pinning (on the members' port 8080)."""
    return [
        {"name": "relaying", "address": RELAYING, "port": 80, "icmp": ICMP_ON, "members": topo.members()},
        {"name": "silent", "address": SILENT, "port": 80, "icmp": ICMP_OFF, "members": topo.members()},
        {
            "name": "switched",
            "address": SWITCHED,
            "port": 80,
            "dispatch": "switch",
            "switch_pinning": "conntrack",
            "icmp": ICMP_ON,
            "members": topo.members(port=8080),
        },
    ]


@pytest.fixture(scope="module")
def pmtu_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """The path-MTU lab with the router forwarding."""
    topo = PmtuTopo(clients=1, backends=2)
    workdir = tmp_path_factory.mktemp("pmtu-lab")
    lab = Lab(topo, lab_config(topo, vips(topo)), workdir=str(workdir), ofp_port=free_port(), rest_port=free_port())
    with lab:
        lab.wait_switches_connected()
        forwarding = lab.host_run(ROUTER, ["sysctl", "-w", "net.ipv4.ip_forward=1"])
        assert forwarding.returncode == 0, forwarding.stderr
        small = lab.host_run(ROUTER, ["ip", "link", "show", f"{ROUTER}-eth1"])
        assert f"mtu {SMALL_MTU}" in small.stdout, small.stdout
        yield lab


def forget_path_mtus(lab: Lab) -> None:
    """Drop what the members learned of path MTUs, so each download starts from MTU 1500."""
    for member in lab.topo.backends:
        flushed = lab.host_run(member, ["ip", "route", "flush", "cache"], timeout=COMMAND_TIMEOUT)
        assert flushed.returncode == 0, flushed.stderr


def learned_mtus(lab: Lab) -> dict[str, str]:
    """Each member's route to the client, as ``ip route get`` shows it (with ``mtu N`` once one was learned)."""
    client = lab.topo.host_ip("c1")
    return {
        member: lab.host_run(member, ["ip", "route", "get", client], timeout=COMMAND_TIMEOUT).stdout
        for member in lab.topo.backends
    }


def download(lab: Lab, vip: str, timeout: int) -> dict[str, Any]:
    """One bounded download of DOWNLOAD_BYTES from ``vip`` by the client behind the router."""
    args = ["download", vip, "--bytes", DOWNLOAD_BYTES, "--timeout", timeout]
    return lab.run_client("c1", args, timeout=timeout + 30)


def ping(lab: Lab, address: str, count: int, timeout: float) -> dict[str, Any]:
    """Echo requests from the client (``nlb_sdn.lab.ping``, bounded): the JSON summary."""
    args = [sys.executable, "-m", "nlb_sdn.lab.ping", address, "--count", str(count), "--timeout", str(timeout)]
    done = lab.host_run("c1", args, timeout=COMMAND_TIMEOUT)
    assert done.stdout.strip(), done.stderr
    summary: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return summary


def test_ping_to_a_vip_is_answered_when_configured(pmtu_lab: Lab) -> None:
    before = packet_ins(pmtu_lab)
    answered = ping(pmtu_lab, RELAYING, 3, 2.0)
    assert answered["received"] == 3, answered
    assert counter_delta(before, packet_ins(pmtu_lab)).get("icmp_echo") == 3
    assert ping(pmtu_lab, SILENT, 2, 1.0)["received"] == 0


def test_without_the_relay_the_download_stalls_in_a_pmtu_black_hole(pmtu_lab: Lab) -> None:
    forget_path_mtus(pmtu_lab)
    stalled = download(pmtu_lab, SILENT, STALL_TIMEOUT)
    assert not stalled["ok"] and stalled["bytes"] < DOWNLOAD_BYTES, stalled
    assert all(f"mtu {SMALL_MTU}" not in route for route in learned_mtus(pmtu_lab).values())


@pytest.mark.parametrize("vip", [RELAYING, SWITCHED], ids=["controller dispatch", "switch dispatch conntrack"])
def test_a_large_download_through_the_vip_completes_over_the_smaller_mtu(pmtu_lab: Lab, vip: str) -> None:
    forget_path_mtus(pmtu_lab)
    before = packet_ins(pmtu_lab)
    done = download(pmtu_lab, vip, DOWNLOAD_TIMEOUT)
    assert done["ok"] and done["bytes"] == DOWNLOAD_BYTES, done
    relayed = counter_delta(before, packet_ins(pmtu_lab)).get("icmp_error", 0)
    assert relayed >= 1, f"no ICMP error relayed: {packet_ins(pmtu_lab)}"
    routes = learned_mtus(pmtu_lab)
    assert routes[done["served_by"]].count(f"mtu {SMALL_MTU}") == 1, routes
