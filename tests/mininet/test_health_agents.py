"""Health and load with host agents over the management network: allotments, failure, load, drain, forgeries."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from nlb_sdn.dam.atoms import session_key
from nlb_sdn.lab.harness import Lab, wait_for
from tests.lib.lab import VIP, host_python, needs_lab, open_connections, plumbed_since
from tests.lib.net import free_port
from topologies import FabricTopo, lab_config

pytestmark = [pytest.mark.mininet, needs_lab]

CAPACITY = {"h1": 40, "h2": 35, "h3": 25}
MGMT_CONTROLLER = "10.99.0.254"
IDLE = 3


def agent_config(topo: FabricTopo, name: str, hl_port: int, key_file: Path) -> dict:
    """One app per backend (the web VIP), TCP health check every 0.5 s, static load for deterministic shares."""
    return {
        "host_id": name,
        "key_file": str(key_file),
        "controllers": [f"{MGMT_CONTROLLER}:{hl_port}"],
        "listen": f"{topo.mgmt_ip(name)}:9101",
        "hb_period": 1.0,
        "apps": [
            {
                "vip": VIP,
                "vport": 80,
                "pip": topo.host_ip(name),
                "pport": 80,
                "capacity": CAPACITY[name],
                "health": {"type": "tcp", "interval": 0.5, "timeout": 0.4, "rise": 1, "fall": 2},
                "load": {"type": "static", "value": 0},
            }
        ],
    }


def app_id(topo: FabricTopo, name: str) -> str:
    """The agent row id of a backend's web app."""
    return f"{VIP}:80/tcp/{topo.host_ip(name)}:80"


@pytest.fixture(scope="module")
def hl_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """The fabric lab with a management network, the controller's H&L handler and an agent on every backend."""
    workdir = tmp_path_factory.mktemp("hl-lab")
    key_file = workdir / "hl.key"
    key_file.write_text(secrets.token_hex(32))
    hl_port = free_port()
    topo = FabricTopo(clients=3, backends=3, mgmt=True)
    members = [dict(m, health="agent") for m in topo.members()]
    config = lab_config(
        topo,
        [{"name": "web", "address": VIP, "port": 80, "idle_timeout": IDLE, "affinity": "app", "members": members}],
        health={"enabled": True, "listen_host": "0.0.0.0", "listen_port": hl_port, "key_file": str(key_file)},
    )
    with Lab(topo, config, workdir=str(workdir), ofp_port=free_port(), rest_port=free_port()) as lab:
        lab.wait_switches_connected()
        lab.hl_port = hl_port  # type: ignore[attr-defined]
        lab.key_file = key_file  # type: ignore[attr-defined]
        for name in topo.backends:
            lab.start_agent(name, agent_config(topo, name, hl_port, Path(lab.host_key_file(name, key_file))))
        wait_for(lambda: all_alive(lab), timeout=15, what="every agent's host alive and warm in the cache")
        yield lab


def cache(lab: Lab) -> dict:
    return lab.rest("GET", "/v1/hl/cache")


def hosts(lab: Lab) -> dict[str, dict]:
    data = cache(lab)
    return {h["host_id"]: h for h in data["hosts"]} if isinstance(data.get("hosts"), list) else data["hosts"]


def all_alive(lab: Lab) -> bool:
    found = hosts(lab)
    return set(found) >= set(CAPACITY) and all(found[h]["status"] == "alive" and found[h]["warm"] for h in CAPACITY)


def row_of(lab: Lab, name: str) -> dict:
    """The cached row of a backend's web app."""
    rows = hosts(lab)[name]["rows"]
    return next(iter(rows.values())) if isinstance(rows, dict) else rows[0]


def shares(summary: dict) -> dict[str, float]:
    total = sum(summary["served_by"].values())
    return {name: 100.0 * count / total for name, count in summary["served_by"].items()}


connect = partial(open_connections, concurrency=8, timeout=90)


def allotted(lab: Lab) -> set[str]:
    return {name for name, value in lab.rest("GET", "/v1/vips/web/allotment")["values"].items() if value > 0}


def test_cache_holds_every_row_with_the_agents_checksums(hl_lab: Lab):
    def in_sync(name: str) -> dict | None:
        """The agent's table once the controller's current state reached it and the cache holds its checksum."""
        table = json.loads(hl_lab.agent_cli(name, ["table", "--json"]).stdout)
        checksum = hosts(hl_lab)[name]["checksum"]
        settled = table["rows"][0]["current"] == "active"
        return table if settled and checksum["cached"] == table["checksum"] == checksum["reported"] else None

    for name in CAPACITY:
        table = wait_for(lambda name=name: in_sync(name), timeout=8, what=f"{name}'s checksums to match")
        row = table["rows"][0]
        for field in (
            "vip",
            "vport",
            "pip",
            "pport",
            "proto",
            "proto_info",
            "health",
            "load",
            "capacity",
            "target",
            "current",
        ):
            assert field in row
    printed = hl_lab.agent_cli("h1", ["table"]).stdout
    for heading in ("VIP", "PHYSICAL", "PROTO", "PROTO_INFO", "HEALTH", "LOAD", "CAPACITY", "TARGET", "CURRENT"):
        assert heading in printed
    assert_a_static_member_mixes_units(hl_lab)


def warning_events(lab: Lab, kind: str) -> list[dict]:
    """The VIP's events of ``kind`` (``warning`` or ``warning_cleared``)."""
    return lab.rest("GET", f"/v1/events?kind={kind}&vip=web")["events"]


def assert_a_static_member_mixes_units(lab: Lab) -> None:
    """A static member next to the reporting agents: the VIP answer warns and the core records the mix's start, then
    its end once the member is removed (the agents' capacities alone give the shares again)."""
    address = lab.rest("GET", "/v1/vips/web/members/h1")["address"]
    lab.rest("POST", "/v1/vips/web/members", {"name": "spare", "address": address, "port": 8081, "weight": 1})
    try:
        (warning,) = lab.rest("GET", "/v1/vips/web")["warnings"]
        assert "mixes units" in warning and "spare" in warning, warning
        wait_for(lambda: warning_events(lab, "warning"), timeout=3, what="the unit mix's warning event")
    finally:
        lab.rest("DELETE", "/v1/vips/web/members/spare")
    wait_for(lambda: warning_events(lab, "warning_cleared"), timeout=3, what="the unit mix's clearing event")
    assert len(warning_events(lab, "warning")) == 1 and "warnings" not in lab.rest("GET", "/v1/vips/web")


def test_capacities_40_35_25_give_their_shares_of_1000_connections(hl_lab: Lab):
    assert hl_lab.rest("GET", "/v1/vips/web/allotment")["values"] == CAPACITY
    served: dict[str, int] = {}
    for client in ("c1", "c2"):
        for name, count in connect(hl_lab, client, 500)["served_by"].items():
            served[name] = served.get(name, 0) + count
    for name, capacity in CAPACITY.items():
        assert abs(100.0 * served.get(name, 0) / 1000 - capacity) <= 2.0, served


def test_raising_reported_load_lowers_the_share(hl_lab: Lab):
    assert hl_lab.agent_cli("h1", ["set-load", app_id(hl_lab.topo, "h1"), "30"]).returncode == 0
    try:
        wait_for(lambda: row_of(hl_lab, "h1")["load"] == 30, timeout=5, what="the cache to hold h1's new load")

        def allotment_follows() -> bool:
            """A few connections keep the allotment in use; it is refreshed within one duration (2 s)."""
            connect(hl_lab, "c1", 5)
            return hl_lab.rest("GET", "/v1/vips/web/allotment")["values"]["h1"] < 20

        wait_for(allotment_follows, timeout=10, interval=0.2, what="an allotment that reflects h1's load")
        assert shares(connect(hl_lab, "c1", 200)).get("h1", 0.0) < 25.0
    finally:
        hl_lab.agent_cli("h1", ["set-load", app_id(hl_lab.topo, "h1"), "0"])


def test_forged_message_changes_nothing(hl_lab: Lab):
    dropped = hl_lab.rest("GET", "/v1/stats")["health"]["messages"]["dropped"].get("bad_mac", 0)
    forge = (
        "import time; from nlb_sdn.signed import encode; import socket; "
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
        f"s.sendto(encode(b'wrong-key-wrong-key', 'goodbye', 'h2', 2**62, time.time(), "
        f"{{'host_id': 'h2', 'reason': 'forged'}}), ('{MGMT_CONTROLLER}', {hl_lab.hl_port}))"
    )
    assert host_python(hl_lab, "h2", forge).returncode == 0
    wait_for(
        lambda: hl_lab.rest("GET", "/v1/stats")["health"]["messages"]["dropped"].get("bad_mac", 0) > dropped,
        timeout=5,
        what="the forged goodbye to be dropped",
    )
    assert hosts(hl_lab)["h2"]["status"] == "alive"
    assert "h2" in allotted(hl_lab)


def test_a_host_holding_its_own_key_cannot_speak_for_another(hl_lab: Lab):
    """h1's agent key signs as h1 only: a goodbye for h2 under it (kid h1 or kid h2) is dropped, h2 stays."""
    before = hl_lab.rest("GET", "/v1/stats")["health"]["messages"]["dropped"]
    impersonate = (
        "import time, socket; from nlb_sdn.signed import encode, load_key; "
        f"key = load_key({hl_lab.host_key_file('h1', hl_lab.key_file)!r}); "
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
        "body = {'host_id': 'h2', 'reason': 'impersonated'}; "
        "[s.sendto(encode(key, 'goodbye', 'h2', 2**62, time.time(), body, kid=kid), "
        f"('{MGMT_CONTROLLER}', {hl_lab.hl_port})) for kid in ('h1', 'h2')]"
    )
    assert host_python(hl_lab, "h1", impersonate).returncode == 0

    def both_dropped() -> bool:
        dropped = hl_lab.rest("GET", "/v1/stats")["health"]["messages"]["dropped"]
        return all(dropped.get(reason, 0) > before.get(reason, 0) for reason in ("wrong_src", "bad_mac"))

    wait_for(both_dropped, timeout=5, what="both impersonating goodbyes to be dropped")
    assert hosts(hl_lab)["h2"]["status"] == "alive"
    assert "h2" in allotted(hl_lab)


def test_killing_the_app_stops_new_connections_within_3_5_s(hl_lab: Lab):
    hl_lab.stop_backend("h2")
    stopped = time.monotonic()
    try:
        wait_for(lambda: "h2" not in allotted(hl_lab), timeout=5, interval=0.05, what="h2 to leave the allotment")
        assert time.monotonic() - stopped < 3.5
        summary = connect(hl_lab, "c3", 90)
        assert "h2" not in summary["served_by"]
    finally:
        hl_lab.start_backend("h2")
    wait_for(lambda: "h2" in allotted(hl_lab), timeout=10, what="h2 back in the allotment")


def test_drain_during_a_long_transfer(hl_lab: Lab):
    started = time.time()
    transfer = hl_lab.start_client("c1", ["download", VIP, "--bytes", 6_000_000, "--rate", 1_500_000, "--timeout", 60])
    try:
        conn = wait_for(
            lambda: plumbed_since(hl_lab, started, "10.0.0.1"), timeout=10, what="the transfer's connection"
        )[0]
    except TimeoutError:
        stats = hl_lab.rest("GET", "/v1/stats")
        raise AssertionError(
            (
                "the transfer's connection was never listed",
                stats["packet_in"],
                stats["dropped"],
                stats["refused"],
                allotted(hl_lab),
                hl_lab.collect_client(transfer, timeout=60),
            )
        ) from None
    member = conn["member"]
    state = hl_lab.rest("PUT", f"/v1/vips/web/members/{member}/state", {"state": "draining"})
    assert state["target"] == "draining" and state["current"] == "draining"
    try:
        summary = connect(hl_lab, "c2", 300)
        assert member not in summary["served_by"], summary
        result = hl_lab.collect_client(transfer, timeout=60)
        assert result["ok"] and result["bytes"] == 6_000_000 and result["served_by"] == member, result
        assert hl_lab.rest("GET", f"/v1/vips/web/members/{member}/state")["current"] in ("draining", "drained")
        wait_for(
            lambda: hl_lab.rest("GET", f"/v1/vips/web/members/{member}/state")["current"] == "drained",
            timeout=IDLE + 10,
            what=f"{member} to read drained",
        )
        agent_row = json.loads(hl_lab.agent_cli(member, ["table", "--json"]).stdout)["rows"][0]
        wait_for(
            lambda: json.loads(hl_lab.agent_cli(member, ["table", "--json"]).stdout)["rows"][0]["current"] == "drained",
            timeout=10,
            what="the agent to record drained",
        )
        assert agent_row["target"] == "draining"
    finally:
        hl_lab.rest("PUT", f"/v1/vips/web/members/{member}/state", {"state": "active"})
    wait_for(lambda: member in allotted(hl_lab), timeout=10, what=f"{member} active again")


def test_app_sessions_reported_by_an_agent_pin_the_client_until_session_down(hl_lab: Lab):
    app = app_id(hl_lab.topo, "h3")
    cart = session_key("app", "cart-42")
    up = hl_lab.agent_cli("h3", ["session-up", app, "--sid", "cart-42", "--client", "10.0.0.3", "--ttl", "300"])
    assert up.returncode == 0, up.stderr
    wait_for(
        lambda: cart in {s["id"] for s in hl_lab.rest("GET", "/v1/sessions")["sessions"]},
        timeout=5,
        what="the controller to record the app session",
    )
    row = next(s for s in hl_lab.rest("GET", "/v1/sessions?vip=web")["sessions"] if s["id"] == cart)
    assert row["identifier"] == "cart-42" and row["type"] == "app" and row["member"] == "h3"
    assert connect(hl_lab, "c3", 50)["served_by"] == {"h3": 50}
    assert hl_lab.agent_cli("h3", ["session-down", app, "--sid", "cart-42"]).returncode == 0
    wait_for(
        lambda: cart not in {s["id"] for s in hl_lab.rest("GET", "/v1/sessions")["sessions"]},
        timeout=5,
        what="the session to be gone",
    )
    assert set(connect(hl_lab, "c3", 60)["served_by"]) == {"h1", "h2", "h3"}


def test_stopped_agent_fails_its_host_and_a_goodbye_removes_it_at_once(hl_lab: Lab):
    hl_lab.stop_agent("h3", graceful=False)
    stopped = time.monotonic()
    wait_for(lambda: hosts(hl_lab)["h3"]["status"] == "failed", timeout=5, interval=0.05, what="h3 failed")
    assert time.monotonic() - stopped < 3.5
    assert "h3" not in allotted(hl_lab)
    tree = hl_lab.rest("GET", "/v1/vips/web/status")
    statuses = {member["name"]: member["operating_status"] for member in tree["vip"]["members"]}
    assert statuses["h3"] != "ONLINE" and statuses["h1"] == "ONLINE", tree
    assert tree["vip"]["operating_status"] == "DEGRADED"
    hl_lab.stop_agent("h2", graceful=True)
    stopped = time.monotonic()
    wait_for(lambda: hosts(hl_lab)["h2"]["status"] == "gone", timeout=2, interval=0.02, what="h2 gone")
    assert time.monotonic() - stopped < 0.5 + 0.3  # goodbye is immediate; the margin is the REST polling
    summary = connect(hl_lab, "c1", 30)
    assert set(summary["served_by"]) == {"h1"}
