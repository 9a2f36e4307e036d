"""L7 VIP services end to end (FIG. 33): router r1 takes the connection, migrates it, the host answers directly.

The fabric lab gets request routers r1 and r2 on the client edge s1 (each with an agent whose heartbeats say it
lives) and a management network. VIP web 10.0.0.100:80 is ``mode: l7`` with routers r1 and r2: the controller
tunnels every new connection to the first live router on the client's edge (r1 while it lives), which peeks at the
request head, decides (``NLBSESS=h2`` cookie pins to h2, ``/api/`` goes to h1/h2, ``/static/`` to h3), moves
the established connection to the member's agent with ``TCP_REPAIR``, and commits at the controller, which
re-plumbs the connection's table-1 entry to the member host's label before the router lets go. The backend serves
the request on the very same client connection, and answers the client directly from the VIP.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from nlb_sdn.flows.tunnel import host_labels
from nlb_sdn.lab.backend import pattern_sha256
from nlb_sdn.lab.harness import Lab, wait_for
from tests.lib.lab import connections_of, counter_delta, flow_counters, host_python, needs_lab, packet_ins
from tests.lib.net import free_port
from topologies import FabricTopo, lab_config

pytestmark = [pytest.mark.mininet, needs_lab]

VIP = "10.0.0.100"
MGMT_CONTROLLER = "10.99.0.254"
DOWNLOAD = 50_000_000
ROUTER_STATUS = 9180
REQUEST = r"""
import hashlib, json, socket, sys, time
path, cookie, expect = sys.argv[2], sys.argv[3], int(sys.argv[4])
source_port = int(sys.argv[5]) if len(sys.argv) > 5 else 0
started = time.monotonic()
sock = socket.create_connection((sys.argv[1], 80), timeout=30, source_address=("", source_port))
local_port = sock.getsockname()[1]
head = f"GET {path} HTTP/1.1\r\nHost: web\r\nConnection: close\r\n"
if cookie:
    head += f"Cookie: NLBSESS={cookie}\r\n"
sock.sendall((head + "\r\n").encode())
data = b""
while b"\r\n\r\n" not in data:
    chunk = sock.recv(65536)
    if not chunk:
        break
    data += chunk
raw_head, _, body = data.partition(b"\r\n\r\n")
lines = raw_head.decode("latin-1").split("\r\n")
headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
digest = hashlib.sha256(body)
size = len(body)
error = ""
try:
    while True:
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        digest.update(chunk)
        size += len(chunk)
except OSError as exc:
    error = repr(exc)
print(json.dumps({"local_port": local_port, "status": lines[0], "served_by": headers.get("x-served-by"),
                  "bytes": size, "sha256": digest.hexdigest(), "error": error,
                  "seconds": round(time.monotonic() - started, 3), "complete": size == expect}))
"""

BAD_HEAD = r"""
import socket, sys
sock = socket.create_connection((sys.argv[1], 80), timeout=10)
sock.sendall(bytes.fromhex(sys.argv[2]))
data = b""
try:
    while chunk := sock.recv(4096):
        data += chunk
except ConnectionResetError:
    data = data or b"reset"
print(data.decode(errors="replace").splitlines()[0] if data else "closed")
"""


@dataclass
class L7Lab:
    """The running lab, its routers' processes and its backends' agent configs (to restart them)."""

    lab: Lab
    routers: dict[str, subprocess.Popen[bytes]]
    agent_configs: dict[str, dict]


def l7_vip(topo: FabricTopo) -> dict:
    """VIP web in mode l7 via routers r1 and r2 (r1 first): a cookie pin to h2, /api/ to h1 and h2, /static/ to h3."""
    return {
        "name": "web",
        "address": VIP,
        "port": 80,
        "mode": "l7",
        "routers": ["r1", "r2"],
        "members": topo.members(),
        "pools": [
            {"name": "api", "members": ["h1", "h2"]},
            {"name": "static", "members": ["h3"]},
            {"name": "pinned", "members": ["h2"]},
            {"name": "all", "members": ["h1", "h2", "h3"]},
        ],
        "rules": [
            {"match": {"cookie": {"name": "NLBSESS", "value": "h2"}}, "pool": "pinned"},
            {"match": {"cookie": {"name": "NLBSESS"}}, "pool": "all", "pin": "cookie"},
            {"match": {"path_prefix": "/api/"}, "pool": "api"},
            {"match": {"path_prefix": "/static/"}, "pool": "static"},
        ],
    }


@pytest.fixture(scope="module")
def l7(tmp_path_factory: pytest.TempPathFactory) -> Iterator[L7Lab]:
    """The fabric lab: backends taking hand-offs and agents taking migrations on h1..h3, routers r1 and r2 running
    (each with an agent that tells the controller it lives)."""
    workdir = tmp_path_factory.mktemp("l7-lab")
    key_file = workdir / "hl.key"
    key_file.write_text(secrets.token_hex(32))
    hl_port, rest_port = free_port(), free_port()
    topo = FabricTopo(clients=2, backends=3, mgmt=True, trunk_mtu=1504, routers=2)
    config = lab_config(
        topo,
        [l7_vip(topo)],
        rest={"host": "0.0.0.0", "allow_unauthenticated": True},  # the routers, in lab namespaces, reach it
        health={"enabled": True, "listen_host": "0.0.0.0", "listen_port": hl_port, "key_file": str(key_file)},
    )
    with Lab(topo, config, workdir=str(workdir), ofp_port=free_port(), rest_port=rest_port) as lab:
        setup = L7Lab(lab, {}, {})
        lab.wait_switches_connected()
        for name in topo.backends:
            lab.stop_backend(name, 80)
            lab.start_backend(name, 80, handoff_socket=lab.handoff_socket(name))
            setup.agent_configs[name] = {
                "host_id": name,
                "key_file": lab.host_key_file(name, key_file),
                "controllers": [f"{MGMT_CONTROLLER}:{hl_port}"],
                "listen": f"{topo.mgmt_ip(name)}:9101",
                "migration": {"listen": f"{topo.host_ip(name)}:7001", "handoff_socket": lab.handoff_socket(name)},
                "apps": [{"vip": VIP, "vport": 80, "pip": topo.host_ip(name), "pport": 80, "capacity": 100}],
            }
            lab.start_agent(name, setup.agent_configs[name])
        for name in topo.routers:
            lab.start_agent(
                name,
                {
                    "host_id": name,
                    "key_file": lab.host_key_file(name, key_file),
                    "controllers": [f"{MGMT_CONTROLLER}:{hl_port}"],
                    "listen": f"{topo.mgmt_ip(name)}:9101",
                },
            )
            setup.routers[name] = lab.start_router(
                name,
                [
                    "--vip",
                    "web",
                    "--controller",
                    f"http://{MGMT_CONTROLLER}:{rest_port}",
                    "--router-name",
                    name,
                ],
                status_port=ROUTER_STATUS,
            )
        wait_for(
            lambda: {h["host_id"] for h in hosts(lab) if h["status"] == "alive"} >= {"r1", "r2"},
            10,
            what="both routers' agents alive",
        )
        yield setup


def hosts(lab: Lab) -> list[dict]:
    """The hosts of the controller's H&L cache."""
    return lab.rest("GET", "/v1/hl/cache")["hosts"]


def request(
    lab: Lab,
    path: str,
    cookie: str = "",
    expect: int = 0,
    client: str = "c1",
    timeout: float = 120.0,
    source_port: int = 0,
) -> dict:
    """One request through the VIP from ``client`` (from ``source_port``, 0: any); its summary (status, served_by,
    bytes, sha256, local port)."""
    result = host_python(lab, client, REQUEST, VIP, path, cookie, expect, source_port, timeout=timeout)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def router_stats(lab: Lab) -> dict:
    """The router's counters from its status port (inside r1)."""
    out = lab.host_run(
        "r1", [sys.executable, "-m", "nlb_sdn.router.cli", "stats", "--status", f"127.0.0.1:{ROUTER_STATUS}"]
    )
    return json.loads(out.stdout)


def migrations_of(lab: Lab, client_port: int) -> list[dict]:
    """The controller's migration records of c1's connection from ``client_port``."""
    return [m for m in lab.rest("GET", "/v1/migrations")["migrations"] if m["client"] == f"10.0.0.1:{client_port}"]


def label_of(lab: Lab, host: str) -> int:
    """The MPLS label of a fabric host."""
    return host_labels(lab.model.fabric)[next(h.mac for h in lab.model.fabric.hosts if h.name == host)]


def test_requests_are_routed_by_cookie_and_path_and_migrated(l7: L7Lab):
    for path, cookie, allowed in (
        ("/api/x", "", {"h1", "h2"}),
        ("/api/y", "", {"h1", "h2"}),
        ("/static/z", "", {"h3"}),
        ("/static/z", "h2", {"h2"}),
        ("/", "h2", {"h2"}),
    ):
        result = request(l7.lab, path, cookie)
        assert result["served_by"] in allowed, (path, cookie, result)
        [migration] = wait_for(
            lambda result=result: [
                m for m in migrations_of(l7.lab, result["local_port"]) if m["outcome"] != "committed"
            ],
            5,
            what="the router's report",
        )
        assert migration["outcome"] == "migrated" and migration["router"] == "r1", migration
        assert migration["member"] == result["served_by"] and migration["duration_ms"] > 0
    stats = wait_for(
        lambda: (found := router_stats(l7.lab))["migrated"] >= 5 and found,
        5,
        what="the router counting five migrations",
    )
    assert stats["proxied"] == 0 and stats["failed"] == 0, stats
    assert stats["migration"]["counters"]["migrated"] >= 5


def test_a_large_download_arrives_complete_on_the_same_connection_without_the_router(l7: L7Lab):
    before = packet_ins(l7.lab)
    capture_file = l7.lab.workdir / "c1-l7.pcap"
    capture = l7.lab.start_process(
        "c1",
        ["tcpdump", "-i", "c1-eth0", "-nn", "-s", "96", "-U", "-w", str(capture_file), f"tcp and host {VIP}"],
        "tcpdump-c1.log",
    )
    try:
        wait_for(lambda: capture_file.exists() and capture_file.stat().st_size > 0, 10, what="tcpdump started")
        result = request(l7.lab, f"/bytes/{DOWNLOAD}", cookie="h2", expect=DOWNLOAD, timeout=300)
    finally:
        time.sleep(0.5)
        l7.lab.stop_process(capture)
    assert result["complete"] and not result["error"], result
    assert result["sha256"] == pattern_sha256(DOWNLOAD) and result["served_by"] == "h2"
    port = result["local_port"]

    # One handshake, no RST on the client's side.
    def packets(expression: str) -> list[str]:
        out = subprocess.run(
            ["tcpdump", "-nn", "-r", str(capture_file), f"tcp port {port} and ({expression})"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        return out.stdout.splitlines()

    assert len(packets("tcp[tcpflags] & tcp-syn != 0 and tcp[tcpflags] & tcp-ack == 0")) == 1
    assert len(packets("tcp[tcpflags] & tcp-syn != 0 and tcp[tcpflags] & tcp-ack != 0")) == 1
    assert packets("tcp[tcpflags] & tcp-rst != 0") == []
    assert len(packets(f"src host {VIP} and src port 80 and greater 1000")) > DOWNLOAD // 1500 // 2

    # The router holds no socket for it; the controller saw one packet-in for it (ARP aside).
    def router_sockets() -> str:
        found = l7.lab.host_run("r1", ["ss", "-tanH", f"( dport = :{port} or sport = :{port} )"])
        assert found.returncode == 0, found
        return found.stdout.strip()

    wait_for(lambda: router_sockets() == "", 5, what="no socket of the migrated connection left on r1")
    after = packet_ins(l7.lab)
    delta = counter_delta(before, after)
    assert delta.get("new_connection") == 1 and delta["total"] - delta.get("arp", 0) == 1, delta
    [migration] = wait_for(
        lambda: [m for m in migrations_of(l7.lab, port) if m["outcome"] != "committed"], 5, what="the router's report"
    )
    assert migration["outcome"] == "migrated" and migration["member"] == "h2"

    # Tunnel mode: the connection's only entry (s1 table 1) now pushes h2's label and counted client packets only;
    # the host's replies (source VIP) met no VIP entry on its edge.
    [entry] = [f for f in l7.lab.dump_flows("s1", table=1) if f"tp_src={port}," in f]
    assert f"set_field:{label_of(l7.lab, 'h2')}->mpls_label" in entry, entry
    assert flow_counters(entry)[1] < DOWNLOAD / 10, entry
    [conn] = [c for c in connections_of(l7.lab) if c["client"] == f"10.0.0.1:{port}"]
    assert conn["member"] == "h2" and conn["mode"] == "tunnel" and conn["label"] == label_of(l7.lab, "h2")
    vip_entries = [f for f in l7.lab.dump_flows("s2", table=0) if f"nw_dst={VIP}" in f and "tp_dst=80" in f]
    assert vip_entries and all(flow_counters(f)[0] == 0 for f in vip_entries), vip_entries


def test_a_new_connection_from_the_ports_of_a_migrated_one_is_routed_by_its_own_request(l7: L7Lab):
    """The member closes first, so the client may reuse its port at once, while the migrated connection's entry
    (to h3) still lives: the new connection's SYN must meet a router, and its /api/ request go to h1 or h2."""
    port = free_port()
    first = request(l7.lab, "/static/one", source_port=port)
    assert first["served_by"] == "h3" and first["local_port"] == port
    [migration] = wait_for(
        lambda: [m for m in migrations_of(l7.lab, port) if m["outcome"] == "migrated"],
        5,
        what="the first connection's migration",
    )
    assert migration["member"] == "h3"
    before = packet_ins(l7.lab).get("port_reuse", 0)
    second = request(l7.lab, "/api/two", source_port=port)
    assert second["served_by"] in ("h1", "h2") and second["local_port"] == port, second
    assert packet_ins(l7.lab)["port_reuse"] == before + 1


def test_malformed_oversized_and_garbage_heads_get_400_or_are_closed_and_the_router_lives_on(l7: L7Lab):
    before = router_stats(l7.lab)
    closed = ("closed", "reset")
    bad_request = ("HTTP/1.1 400 Bad Request",)
    cases = [
        ("GARBAGE\r\n\r\n", bad_request),
        ("GET / HTTP/1.1\r\n\r\n", bad_request),
        ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", bad_request),
        ("GET /\x00 HTTP/1.1\r\nHost: a\r\n\r\n", closed),
        ("GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + "x" * 5000 + "\r\n\r\n", bad_request),  # line > 4 KiB
        # head > 8 KiB
        ("GET / HTTP/1.1\r\nHost: a\r\n" + ("X-Long: " + "y" * 3000 + "\r\n") * 3 + "\r\n", bad_request),
        ("GET / HTTP/1.1\r\nHost: a\r\n" + "X-Many: z\r\n" * 100 + "\r\n", bad_request),  # > 64 headers
        (bytes(range(256)).decode("latin-1") * 4, closed),
    ]  # binary garbage
    for head, expected in cases:
        out = host_python(l7.lab, "c1", BAD_HEAD, VIP, head.encode("latin-1").hex())
        assert out.returncode == 0 and out.stdout.strip() in expected, (head[:80], out)
    after = router_stats(l7.lab)
    assert after["bad_request"] + after["closed"] - before["bad_request"] - before["closed"] == len(cases), after
    assert {"header_too_large", "head_too_large", "too_many_headers"} <= set(after["reasons"]), after["reasons"]
    assert l7.routers["r1"].poll() is None
    assert request(l7.lab, "/api/ok")["served_by"] in ("h1", "h2")


def test_twenty_of_twenty_concurrent_connections_are_migrated(l7: L7Lab):
    before = l7.lab.rest("GET", "/v1/migrations")["counters"]
    summary = l7.lab.run_client("c2", ["connections", VIP, "--count", 20, "--concurrency", 4, "--timeout", 60])
    assert summary["ok"] == 20 and summary["errors"] == 0 and set(summary["served_by"]) <= {"h1", "h2", "h3"}
    after = wait_for(
        lambda: (
            (found := l7.lab.rest("GET", "/v1/migrations")["counters"]).get("migrated", 0) - before.get("migrated", 0)
            >= 20
            and found
        ),
        10,
        what="twenty migrated reports",
    )
    assert after.get("migrated", 0) - before.get("migrated", 0) == 20
    assert after.get("declined", 0) == before.get("declined", 0), after


def test_with_no_rule_deciding_the_controllers_allotment_does(l7: L7Lab):
    """``/`` matches no rule: the router follows the allotment, so draining h1 through REST takes it out."""
    lab = l7.lab
    assert {request(lab, f"/?n={n}")["served_by"] for n in range(12)} == {"h1", "h2", "h3"}
    lab.rest("PUT", "/v1/vips/web/members/h1/state", {"state": "draining"})
    try:
        wait_for(
            lambda: "h1" not in lab.rest("GET", "/v1/vips/web/allotment")["values"], 10, what="the allotment without h1"
        )
        wait_for(
            lambda: all(request(lab, f"/?m={n}")["served_by"] != "h1" for n in range(6)),
            10,
            what="the router to follow the allotment",
        )
        assert {request(lab, f"/?k={n}")["served_by"] for n in range(12)} == {"h2", "h3"}
    finally:
        lab.rest("PUT", "/v1/vips/web/members/h1/state", {"state": "active"})


def test_with_5_percent_loss_on_the_routers_link_twenty_of_twenty_migrations_succeed(l7: L7Lab):
    """The kernel has no netem: ``Lab.make_lossy`` relays r1's link through a process that drops 5 % of frames."""
    lab = l7.lab
    before = lab.rest("GET", "/v1/migrations")["counters"]
    lab.make_lossy("r1", 0.05)
    try:
        results = [request(lab, f"/api/loss-{n}", timeout=60) for n in range(20)]
        assert all(r["status"].startswith("HTTP/1.1 ") and r["served_by"] in {"h1", "h2"} for r in results), results
        after = wait_for(
            lambda: (
                (found := lab.rest("GET", "/v1/migrations")["counters"]).get("migrated", 0) - before.get("migrated", 0)
                >= 20
                and found
            ),
            15,
            what="twenty migrated reports",
        )
        assert after.get("migrated", 0) - before.get("migrated", 0) == 20, after
        assert after.get("proxied", 0) == before.get("proxied", 0), after
    finally:
        lab.restore_link("r1")
    relay_log = (lab.workdir / "lossy-r1.log").read_text()
    assert "dropped_from" in relay_log, relay_log


def test_a_member_that_takes_no_migration_is_proxied_by_the_router(l7: L7Lab):
    l7.lab.stop_agent("h3")
    try:
        result = request(l7.lab, "/static/proxied")
        assert result["served_by"] == "h3" and result["status"].startswith("HTTP/1.1 404"), result
        outcomes = wait_for(
            lambda: [
                (m["outcome"], m["reason"])
                for m in migrations_of(l7.lab, result["local_port"])
                if m["outcome"] == "proxied"
            ],
            5,
            what="the router's proxied report",
        )
        assert outcomes == [("proxied", "unreachable")]
        [conn] = [c for c in connections_of(l7.lab) if c["client"] == f"10.0.0.1:{result['local_port']}"]
        assert conn["member"] == "r1", conn
        assert router_stats(l7.lab)["migration"]["reasons"].get("unreachable", 0) >= 1
    finally:
        l7.lab.start_agent("h3", l7.agent_configs["h3"])


FORGE_TICKET = r"""
import os, socket, sys, time
from nlb_sdn.migration.tickets import TICKET_TTL, Ticket, issue
from nlb_sdn.signed import frame, load_key
key_file, host, agent = sys.argv[1:4]
now = time.time()
ticket = Ticket("m-forged", host, "10.0.0.100", 80, "10.0.0.1", 40000, now + TICKET_TTL, os.urandom(16).hex())
grant = issue(load_key(key_file), ticket, "lbu:1", 1, now)
with socket.create_connection((agent, 7001), timeout=5) as sock:
    sock.sendall(frame(grant.ticket))
    print("closed" if sock.recv(100) == b"" else "answered")
"""


def test_a_router_cannot_forge_a_ticket_and_the_member_refuses_a_migration_without_one(l7: L7Lab):
    """r1 holds only its own key: a ticket it signs for h2 is refused by h2's agent (its kid h2, r1's MAC) without an
    answer, counted, and h2 still takes the real migrations the controller tickets."""
    lab, agent = l7.lab, l7.lab.topo.host_ip("h2")
    key_r1 = lab.host_key_file("r1", lab.workdir / "hl.key")
    forged = host_python(lab, "r1", FORGE_TICKET, key_r1, "h2", agent)
    assert forged.returncode == 0 and forged.stdout.strip() == "closed", forged.stderr[-2000:]
    table = json.loads(lab.agent_cli("h2", ["table", "--json"]).stdout)
    assert table["migrations"]["refused_tickets"].get("bad_mac", 0) >= 1, table["migrations"]  # kid h2, r1's key
    assert request(lab, "/bytes/1000", cookie="h2", expect=1000)["served_by"] == "h2"


def test_migrated_downloads_run_on_when_the_router_is_killed_and_r2_takes_new_connections(l7: L7Lab):
    size, rate = 6_000_000, 1_500_000
    downloads = [
        l7.lab.start_process(
            client,
            [sys.executable, "-c", REQUEST, VIP, f"/bytes/{size}?rate={rate}", "", str(size)],
            f"download-{client}-{index}.log",
        )
        for index, client in enumerate(("c1", "c2", "c1"))
    ]
    logs = [l7.lab.workdir / f"download-{client}-{index}.log" for index, client in enumerate(("c1", "c2", "c1"))]
    counters_of = lambda: l7.lab.rest("GET", "/v1/migrations")["counters"]  # noqa: E731
    before = counters_of().get("migrated", 0)
    wait_for(lambda: counters_of().get("migrated", 0) - before >= 3, 15, what="three migrations")
    l7.lab.stop_process(l7.routers["r1"])
    l7.lab.stop_agent("r1")
    wait_for(
        lambda: any(h["host_id"] == "r1" and h["status"] != "alive" for h in hosts(l7.lab)),
        5,
        what="r1's agent gone from the H&L cache",
    )
    after = request(l7.lab, "/static/new")
    [migration] = wait_for(
        lambda: [m for m in migrations_of(l7.lab, after["local_port"]) if m["outcome"] != "committed"],
        5,
        what="r2's report",
    )
    assert after["served_by"] == "h3" and migration["router"] == "r2" and migration["outcome"] == "migrated"
    for proc in downloads:
        proc.wait(timeout=60)
    for log in logs:
        result = json.loads(log.read_text().strip().splitlines()[-1])
        assert result["complete"] and not result["error"], result
        assert result["sha256"] == pattern_sha256(size) and result["seconds"] > 2.0, result


def test_a_session_cookie_pins_the_client_to_the_host_its_app_reported(l7: L7Lab):
    """The app on h3 reports session s-77 through its agent; the router's pin rule sends NLBSESS=s-77 to h3."""
    lab = l7.lab
    app_id = f"{VIP}:80/tcp/{lab.topo.host_ip('h3')}:80"
    assert request(lab, "/api/a", cookie="s-77")["served_by"] in {"h1", "h2"}, "no session yet: the path decides"
    up = lab.agent_cli("h3", ["session-up", app_id, "--sid", "s-77", "--client", lab.topo.host_ip("c1")])
    assert up.returncode == 0, up.stderr
    wait_for(
        lambda: request(lab, "/api/a", cookie="s-77")["served_by"] == "h3",
        timeout=10,
        what="the router to pin s-77 to h3",
    )
    pinned = [request(lab, "/api/b", cookie="s-77") for _ in range(5)]
    assert {r["served_by"] for r in pinned} == {"h3"}, (
        pinned,
        lab.rest("GET", "/v1/sessions?vip=web"),
        lab.rest("GET", "/v1/migrations")["migrations"][-5:],
    )
    down = lab.agent_cli("h3", ["session-down", app_id, "--sid", "s-77"])
    assert down.returncode == 0, down.stderr
    wait_for(
        lambda: request(lab, "/api/c", cookie="s-77")["served_by"] in {"h1", "h2"},
        timeout=10,
        what="the session to end",
    )
