"""A real HTTP client reusing its ports through a controller-dispatched VIP loses no segment (issue 14 item 0).

ApacheBench opens a new connection per request and the member closes first, so the client holds no TIME_WAIT and,
with its port range narrowed to 1000 ports, reuses every port while the ended connection's entries still live. Before
the fix about a quarter of the reuses lost the new connection's first ACK and request to the old member (Open vSwitch's
cached datapath flow of the ended connection) and the client retransmitted after 200 ms. The test fails on any TCP
retransmission in the client's namespace (``nstat`` TcpRetransSegs), not on a timing; a direct run to a host that is
no member shows the lab itself retransmits nothing.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from nlb_sdn.lab.harness import Lab
from tests.lib.ab import AbRun, needs_ab, open_sockets, run_ab, tcp_counter
from tests.lib.lab import VIP, counter_delta, needs_lab, packet_ins
from tests.lib.net import free_port
from tests.lib.polling import poll_until
from topologies import FabricTopo, lab_config

pytestmark = [pytest.mark.mininet, needs_lab, needs_ab]

CLIENT = "c1"
MEMBERS = ["h1", "h2"]
NON_MEMBER = "h3"
PORT_RANGE = "50000 50999"
REQUESTS, CONCURRENCY = 1500, 16
MIN_REUSES = REQUESTS // 3
SETTLE_TIMEOUT = 15.0


@pytest.fixture(scope="module")
def reuse_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """One client, VIP web over h1 and h2 (controller dispatch, nat), h3 serving port 80 outside the VIP, and the
    client's ephemeral ports narrowed so that ``ab`` reuses them."""
    topo = FabricTopo(clients=1, backends=3)
    vip = {"name": "web", "address": VIP, "port": 80, "idle_timeout": 15, "members": topo.members(backends=MEMBERS)}
    workdir = tmp_path_factory.mktemp("port-reuse-lab")
    lab = Lab(topo, lab_config(topo, [vip]), workdir=str(workdir), ofp_port=free_port(), rest_port=free_port())
    with lab:
        lab.wait_switches_connected()
        narrowed = lab.host_run(CLIENT, ["sysctl", "-w", f"net.ipv4.ip_local_port_range={PORT_RANGE}"])
        assert narrowed.returncode == 0, narrowed.stderr
        yield lab


def retransmits_around(lab: Lab, address: str, csv_path: str) -> tuple[AbRun, int]:
    """One ``ab`` run against ``address`` and the client's retransmitted segments during it, counted once the
    client's sockets toward ``address`` are all closed (a lost last FIN would be retransmitted before)."""
    before = tcp_counter(lab, CLIENT, "TcpRetransSegs")
    run = run_ab(lab, CLIENT, f"http://{address}/", REQUESTS, CONCURRENCY, csv_path)
    settled = poll_until(lambda: not open_sockets(lab, CLIENT, address), timeout=SETTLE_TIMEOUT, interval=0.1)
    assert settled, f"{CLIENT}'s connections to {address} did not close: {open_sockets(lab, CLIENT, address)}"
    return run, tcp_counter(lab, CLIENT, "TcpRetransSegs") - before


def test_ab_through_the_vip_on_reused_ports_needs_no_retransmission(reuse_lab: Lab) -> None:
    counters = packet_ins(reuse_lab)
    vip, vip_retransmits = retransmits_around(reuse_lab, VIP, str(reuse_lab.workdir / "ab-vip.csv"))
    reused = counter_delta(counters, packet_ins(reuse_lab))
    direct, direct_retransmits = retransmits_around(
        reuse_lab, reuse_lab.topo.host_ip(NON_MEMBER), str(reuse_lab.workdir / "ab-direct.csv")
    )
    print(f"vip: {vip.summary()}, direct to {NON_MEMBER}: {direct.summary()}, packet-ins: {reused}")
    assert (vip.complete, vip.failed) == (REQUESTS, 0) and (direct.complete, direct.failed) == (REQUESTS, 0)
    assert reused.get("port_reuse", 0) >= MIN_REUSES, f"ab reused too few ports to test anything: {reused}"
    assert direct_retransmits == 0, "the lab itself lost segments"
    assert vip_retransmits == 0, f"{vip_retransmits} segments retransmitted through the VIP ({vip.summary()})"
