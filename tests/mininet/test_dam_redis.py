"""The Redis DAM in the lab: two controller instances see the same sessions; a restart rebuilds from the DAM."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from functools import partial
from typing import Any
from urllib.parse import quote

import pytest
import yaml

from nlb_sdn.dam.atoms import parse_route_key, route_key, session_key
from nlb_sdn.lab.harness import Lab, wait_for
from tests.lib.fault_load import FaultLoad
from tests.lib.lab import (
    affinity_vip,
    connections_of,
    needs_lab,
    open_connections,
    restart_controller,
    start_downloads,
)
from tests.lib.net import free_port
from tests.lib.processes import stop_process
from tests.lib.redis_server import RedisServer
from topologies import FabricTopo, lab_config

pytestmark = [pytest.mark.mininet, needs_lab]

REDIS_OUTAGE_S = 10.0
"""Issue 11: Redis is stopped for 10 s."""


@pytest.fixture(scope="module")
def redis_lab(redis: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    topo = FabricTopo(clients=4, backends=3)
    vips = [affinity_vip(topo)]
    config = lab_config(topo, vips, dam={"backend": "redis", "url": redis.url, "prefix": "labtest:"})
    lab = Lab(
        topo, config, workdir=str(tmp_path_factory.mktemp("redis-lab")), ofp_port=free_port(), rest_port=free_port()
    )
    with lab:
        lab.wait_switches_connected()
        yield lab


def rest(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        import json

        return json.loads(response.read())


def endpoint(text: str) -> tuple[str, int]:
    """``(ip, port)`` of an ``ip:port`` as REST shows a connection's client and VIP."""
    ip, _, port = text.rpartition(":")
    return ip, int(port)


def dam_atoms(get: Any, kind: str) -> list[dict]:
    """Every atom of a kind, following the REST pages (a Redis page is one SCAN step and may be short)."""
    atoms: list[dict] = []
    cursor = ""
    for _ in range(1000):
        page = get("GET", f"/v1/dam?kind={kind}&count=1000" + (f"&cursor={quote(cursor)}" if cursor else ""))
        atoms += page["atoms"]
        cursor = page["next_cursor"]
        if not cursor:
            return atoms
    raise AssertionError("DAM paging did not end")


connect = partial(open_connections, concurrency=2)


@pytest.fixture
def second_lbu(redis_lab: Lab, tmp_path) -> Iterator[int]:
    """A second controller instance (LBU 2) on the same Redis; no switch connects to it. Yields its REST port."""
    config = yaml.safe_load(redis_lab.config_path.read_text())
    rest_port = free_port()
    config["controller"]["lbu_id"] = 2
    config["controller"]["rest"]["port"] = rest_port
    path = tmp_path / "lbu2.yaml"
    path.write_text(yaml.safe_dump(config))
    with open(tmp_path / "lbu2.log", "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "nlb_sdn.cli",
                "controller",
                "--config",
                str(path),
                "--ofp-tcp-listen-port",
                str(free_port()),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: _answers(rest_port), timeout=20, what="LBU 2's REST API")
        yield rest_port
    finally:
        stop_process(proc, timeout=10)


def _answers(port: int) -> bool:
    try:
        rest(port, "/v1/stats")
        return True
    except OSError:
        return False


def test_two_controllers_on_one_redis_see_the_same_sessions(redis_lab: Lab, second_lbu: int):
    connect(redis_lab, "c1", 5)
    first = {s["id"]: s["member"] for s in redis_lab.rest("GET", "/v1/sessions?vip=web")["sessions"]}
    wait_for(
        lambda: (
            first.items()
            <= {s["id"]: s["member"] for s in rest(second_lbu, "/v1/sessions?vip=web")["sessions"]}.items()
        ),
        timeout=5,
        what="LBU 2 to hold LBU 1's sessions",
    )
    connect(redis_lab, "c2", 5)
    second = session_key("client_ip", "web@10.0.0.2")
    wait_for(
        lambda: second in {s["id"] for s in rest(second_lbu, "/v1/sessions")["sessions"]},
        timeout=5,
        what="LBU 2 to follow a new session through the change feed",
    )
    atoms = rest(second_lbu, "/v1/dam?kind=session")["atoms"]
    session = next(a for a in atoms if a["key"] == second)
    assert session["metadata"]["origin"] == "lbu:1" and session["metadata"]["expires_at"] is not None

    def every_connection_has_its_route_atom() -> bool:
        routes = {a["key"]: a for a in dam_atoms(redis_lab.rest, "route")}
        live = connections_of(redis_lab)
        keys = {route_key(*endpoint(c["client"]), *endpoint(c["vip_address"])) for c in live}
        return (
            bool(keys) and keys <= set(routes) and all(routes[k]["data"]["member"] in ("h1", "h2", "h3") for k in keys)
        )

    wait_for(every_connection_has_its_route_atom, timeout=5, what="a route atom for every tracked connection")
    assert rest(second_lbu, "/v1/stats")["dam"]["degraded"] is False


def test_restart_with_redis_rebuilds_from_the_dam_and_breaks_no_transfer(redis_lab: Lab):
    transfers = start_downloads(redis_lab, 10, 2_500_000, 500_000)
    restart_controller(redis_lab)
    log = redis_lab.controller_log.read_text()
    loaded = [line for line in log.splitlines() if "atoms from the DAM (redis)" in line][-1]
    assert int(loaded.split("loaded ")[1].split()[0]) >= 10, loaded
    results = [redis_lab.collect_client(proc, timeout=90) for proc in transfers]
    assert [r for r in results if not r["ok"] or r["bytes"] != 2_500_000] == []
    sessions_after = {s["id"] for s in redis_lab.rest("GET", "/v1/sessions")["sessions"]}
    assert session_key("client_ip", "web@10.0.0.1") in sessions_after


def test_redis_outage_of_10s_under_load_degrades_to_local_decisions_and_replays(redis_lab: Lab, redis: RedisServer):
    """Issue 11: Redis stopped for 10 s under constant load from every client; no established download breaks, every
    client keeps opening new connections through the outage, and the queued writes are replayed."""
    load = FaultLoad(redis_lab, duration=REDIS_OUTAGE_S + 8, downloads=8, size=4_000_000, rate=250_000)
    load.start()
    load.wait_flowing()
    stopped_at = time.time()
    redis.stop()
    try:
        wait_for(
            lambda: (
                redis_lab.rest("GET", "/v1/stats")["dam"]["degraded"]
                and redis_lab.rest("GET", "/v1/stats")["dam"]["queued"] > 0
            ),
            timeout=5,
            what="the DAM to report degraded with writes queued",
        )
        time.sleep(max(0.0, stopped_at + REDIS_OUTAGE_S - time.time()))  # the outage's length is the 10 s
    finally:
        redis.start()
    started_at = time.time()
    wait_for(
        lambda: not redis_lab.rest("GET", "/v1/stats")["dam"]["degraded"],
        timeout=10,
        what="the DAM to reconnect and replay",
    )
    figures = load.finish()
    print(f"Redis outage figures: broken={figures.broken} gaps={[round(g, 2) for g in figures.gaps]}")
    assert figures.broken == 0, f"{figures.broken} of {figures.established} established downloads broke"
    assert figures.spans(stopped_at) and figures.spans(started_at), "load on both sides of the outage"
    during = [[t for t in times if stopped_at < t < started_at] for times in figures.ok_times]
    assert all(during), "every client opened new connections while Redis was down"
    wait_for(
        lambda: any(parse_route_key(a["key"])[0] == "10.0.0.3" for a in dam_atoms(redis_lab.rest, "route")),
        timeout=5,
        what="the replayed route atoms in Redis",
    )
