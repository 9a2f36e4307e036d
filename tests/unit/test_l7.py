"""L7 VIP services: the config rules, the router choice, moving a connection, the migration log and its REST API."""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest

from nlb_sdn.config import Config, ConfigError, parse_config
from nlb_sdn.core import l7
from nlb_sdn.core.l7 import MigrationRequest
from nlb_sdn.dam.atoms import route_key
from nlb_sdn.flows.pipeline import Cookie, CookieKind, Priority, Table
from nlb_sdn.flows.tunnel import TunnelRoute, host_labels
from nlb_sdn.framework import ofproto_v1_3 as ofp, ofproto_v1_3_parser as parser
from nlb_sdn.health.cache import HostEntry
from nlb_sdn.rest import make_app
from tests.lib.core import punt_syn
from tests.lib.rest import call
from tests.lib.shell_double import ShellDouble
from topologies import FabricTopo, lab_config

VIP = "10.0.0.100"
R1 = "10.0.0.91"


def l7_data(routers: list[str] | None = None, **vip: Any) -> dict[str, Any]:
    """A FabricTopo config (routers r1 on s1, r2 on s1) with VIP web in mode l7 over h1..h3:80."""
    topo = FabricTopo(routers=2)
    return lab_config(
        topo,
        [
            {
                "name": "web",
                "address": VIP,
                "port": 80,
                "mode": "l7",
                "routers": ["r1", "r2"] if routers is None else routers,
                "members": topo.members(),
                "pools": [{"name": "api", "members": ["h1", "h2"]}, {"name": "static", "members": ["h3"]}],
                "rules": [{"match": {"path_prefix": "/api/"}, "pool": "api"}],
                **vip,
            }
        ],
        rest={"enabled": False},
    )


def balancer(**vip: Any) -> ShellDouble:
    """A core over the l7 config."""
    return ShellDouble(parse_config(l7_data(**vip)))


open_connection = partial(punt_syn, in_port=3)
"""A client SYN punted by switch ``dpid`` (host port 3); the messages the core answers with."""


def label_of(lb: ShellDouble, host: str) -> int:
    """The MPLS label of a fabric host."""
    return host_labels(lb.config.fabric)[next(h.mac for h in lb.config.fabric.hosts if h.name == host)]


def pushed_label(msg: Any) -> int:
    """The label a tunnel connection entry pushes."""
    return next(
        action.value
        for inst in msg.instructions
        for action in getattr(inst, "actions", [])
        if isinstance(action, parser.OFPActionSetField) and action.key == "mpls_label"
    )


# --- config ---------------------------------------------------------------------------------------------------


def test_an_l7_vip_takes_routers_and_migration_settings_with_defaults() -> None:
    vip = parse_config(l7_data()).vip("web")
    assert vip.mode == "l7" and vip.routers == ["r1", "r2"]
    assert (vip.migration.timeout_ms, vip.migration.fallback) == (1000, "proxy")
    by_address = parse_config(l7_data(routers=[R1], migration={"timeout_ms": 500, "fallback": "reset"})).vip("web")
    assert by_address.routers == [R1] and by_address.migration.fallback == "reset"


@pytest.mark.parametrize(
    "routers, vip, key, reason",
    [
        ([], {}, "vips[web]", "mode l7 needs routers"),
        (["r1", "r1"], {}, "vips[web]", "listed twice"),
        (["r9"], {}, "(top level)", "router 'r9': not a host of the fabric"),
        (["r1"], {"dispatch": "switch"}, "vips[web]", "mode l7 needs dispatch controller"),
        (["r1"], {"affinity": "client_ip"}, "vips[web]", "affinity none"),
        (["r1"], {"migration": {"fallback": "drop"}}, "vips[web].migration.fallback", "Input should be"),
        (["r1"], {"migration": {"timeout_ms": 10}}, "vips[web].migration.timeout_ms", "greater than or equal to 50"),
    ],
)
def test_bad_l7_settings_are_refused_naming_key_and_reason(
    routers: list[str], vip: dict, key: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(l7_data(routers=routers, **vip))
    assert error.value.key == key and reason in error.value.reason


def test_routers_belong_to_l7_vips_and_l7_members_listen_on_the_vip_port() -> None:
    data = l7_data()
    data["vips"][0]["mode"] = "nat"
    data["vips"][0]["pools"], data["vips"][0]["rules"] = [], []
    with pytest.raises(ConfigError, match="only a VIP service in mode l7 has request routers"):
        parse_config(data)
    data = l7_data()
    data["vips"][0]["members"][0]["port"] = 8080
    with pytest.raises(ConfigError, match="members must listen on the VIP's port 80"):
        parse_config(data)


# --- router choice and plumbing ---------------------------------------------------------------------------------


def test_router_picker_prefers_the_ingress_switch_else_takes_turns() -> None:
    config = parse_config(l7_data())
    routers = l7.vip_routers(config.vip("web"), config.fabric)
    assert [r.name for r in routers] == ["r1", "r2"]
    picker = l7.RouterPicker()
    assert [picker.pick("web", routers, "s1").name for _ in range(3)] == ["r1", "r1", "r1"]
    assert [picker.pick("web", routers, "s2").name for _ in range(4)] == ["r1", "r2", "r1", "r2"]
    assert picker.pick("web", [], "s1") is None


def test_a_new_l7_connection_is_tunnelled_to_the_router_on_its_ingress_switch() -> None:
    lb = balancer()
    msgs = open_connection(lb)
    [entry] = [m for m in msgs if isinstance(m, parser.OFPFlowMod)]
    assert entry.table_id == Table.CONNECTIONS and entry.priority == Priority.CONNECTION
    assert pushed_label(entry) == label_of(lb, "r1")
    assert Cookie.decode(entry.cookie).kind == CookieKind.TUNNEL
    [conn] = lb.connections()
    assert conn["member"] == "r1" and conn["mode"] == "tunnel" and conn["label"] == label_of(lb, "r1")
    route = next(iter(lb.connections_by_key.values())).route
    assert isinstance(route, TunnelRoute) and route.member_address == R1
    assert lb.stats()["packet_in"]["new_connection"] == 1


def test_connections_entering_elsewhere_take_the_routers_in_turn() -> None:
    lb = balancer()
    for port in range(40000, 40004):
        open_connection(lb, dpid=2, port=port, client="10.0.0.11")
    assert sorted(c["member"] for c in lb.connections()) == ["r1", "r1", "r2", "r2"]


def test_an_l7_vip_without_a_router_refuses_new_connections() -> None:
    lb = balancer()
    lb.router_picker.pick = lambda *_args: None  # type: ignore[method-assign]
    assert open_connection(lb) == []
    assert lb.stats()["refused"]["no_router"] == 1 and lb.connections() == []


# --- move and the migration log ---------------------------------------------------------------------------------


def test_move_replaces_the_connection_entry_with_the_member_hosts_label() -> None:
    lb = balancer()
    [original] = [m for m in open_connection(lb) if isinstance(m, parser.OFPFlowMod)]
    dpid, msgs = lb.move_connection("web", "10.0.0.1", 40000, "h2")
    [entry] = msgs
    assert dpid == 1 and entry.command == ofp.OFPFC_ADD
    assert (entry.table_id, entry.priority, dict(entry.match.items())) == (
        original.table_id,
        original.priority,
        dict(original.match.items()),
    )
    assert pushed_label(entry) == label_of(lb, "h2")
    assert Cookie.decode(entry.cookie).endpoint_id == lb.config.vip("web").member("h2").endpoint_id
    [conn] = lb.connections()
    assert conn["member"] == "h2" and conn["label"] == label_of(lb, "h2")
    assert lb.stats()["connections"]["per_member"] == {"web": {"h2": 1}}
    put = [op for op in lb.dam_ops if op.verb == "put"][-1]
    assert put.key == route_key("10.0.0.1", 40000, "10.0.0.100", 80) and put.data["member"] == "h2"
    assert put.data["mode"] == "tunnel"


@pytest.mark.parametrize(
    "vip, client_port, target, error",
    [
        ("nope", 40000, "h1", LookupError),
        ("web", 40001, "h1", LookupError),
        ("web", 40000, "h9", LookupError),
    ],
)
def test_move_names_what_is_unknown(vip: str, client_port: int, target: str, error: type[Exception]) -> None:
    lb = balancer()
    open_connection(lb)
    with pytest.raises(error):
        lb.move_connection(vip, "10.0.0.1", client_port, target)
    assert lb.connections()[0]["member"] == "r1"


def test_commit_then_report_records_one_migration_with_router_member_and_outcome() -> None:
    lb = balancer()
    open_connection(lb)
    dpid, msgs, migration = lb.commit_migration("m1", "web", "10.0.0.1", 40000, "h3", now=2.0)
    assert dpid == 1 and len(msgs) == 1
    assert (migration.router, migration.member, migration.outcome) == ("r1", "h3", "committed")
    dpid, msgs, migration = lb.report_migration(
        "m1", "web", "10.0.0.1", 40000, "r1", "h3", "migrated", "", 12.5, now=2.1
    )
    assert dpid is None and msgs == []
    view = lb.migrations.view()
    assert view["count"] == 1 and view["counters"] == {"committed": 1, "migrated": 1}
    record = view["migrations"][0]
    assert record["client"] == "10.0.0.1:40000" and record["duration_ms"] == 12.5 and record["outcome"] == "migrated"
    assert lb.stats()["migrations"] == {"committed": 1, "migrated": 1}


def test_a_committed_migration_that_fails_afterwards_goes_back_to_its_router() -> None:
    lb = balancer()
    open_connection(lb)
    lb.commit_migration("m1", "web", "10.0.0.1", 40000, "h1", now=2.0)
    dpid, msgs, migration = lb.report_migration(
        "m1", "web", "10.0.0.1", 40000, "", "h1", "proxied", "connection_lost", 30.0, now=2.1
    )
    assert dpid == 1 and pushed_label(msgs[0]) == label_of(lb, "r1")
    assert lb.connections()[0]["member"] == "r1" and migration.outcome == "proxied"
    assert lb.migrations.counters["returned_to_router"] == 1


def test_a_declined_migration_without_commit_changes_no_flow() -> None:
    lb = balancer()
    open_connection(lb)
    dpid, msgs, migration = lb.report_migration(
        "m2", "web", "10.0.0.1", 40000, "r1", "h2", "declined", "refused", 5.0, now=2.0
    )
    assert dpid is None and msgs == [] and lb.connections()[0]["member"] == "r1"
    assert migration.reason == "refused" and lb.migrations.counters["reason:refused"] == 1
    lb.report_migration("m2", "web", "10.0.0.1", 40000, "r1", "h2", "proxied", "refused", None, now=2.1)
    assert lb.migrations.view()["migrations"][0]["duration_ms"] == 5.0
    assert lb.migrations.counters["declined"] == 1 and lb.migrations.counters["proxied"] == 1


def test_the_migration_log_is_bounded() -> None:
    log = l7.MigrationLog(size=3)
    for index in range(5):
        log.reported(f"m{index}", "10.0.0.1:1", "web", "r1", "h1", "migrated", "", 1.0, now=float(index))
    assert [m["id"] for m in log.view()["migrations"]] == ["m2", "m3", "m4"]
    assert [m["id"] for m in log.view(limit=1)["migrations"]] == ["m4"]
    assert log.counters["migrated"] == 5


# --- REST ----------------------------------------------------------------------------------------------------------


class CoreBackend:
    """The classifier's migration backend over the pure core (no switch: flow changes count as confirmed)."""

    def __init__(self, lb: ShellDouble, confirm: bool = True) -> None:
        self.lb = lb
        self.confirm = confirm
        self.sent: list[tuple[int, list[Any]]] = []

    def current_config(self) -> Config:
        return self.lb.config

    def migrations(self, limit: int | None = None) -> dict:
        return self.lb.migrations.view(limit)

    def migrate(self, request: MigrationRequest) -> tuple[dict, bool]:
        client_ip, client_port = request.client_address
        if request.phase == "commit":
            dpid, msgs, migration = self.lb.commit_migration(
                request.id, request.vip, client_ip, client_port, request.member, 3.0
            )
        else:
            dpid, msgs, migration = self.lb.report_migration(
                request.id,
                request.vip,
                client_ip,
                client_port,
                request.router,
                request.member,
                request.outcome or "",
                request.reason,
                request.duration_ms,
                3.0,
            )
        if dpid is not None:
            self.sent.append((dpid, msgs))
        return migration.as_dict(), self.confirm


COMMIT = {"phase": "commit", "id": "m1", "vip": "web", "client": "10.0.0.1:40000", "member": "h2", "router": "r1"}


def test_rest_commit_moves_the_connection_and_the_report_completes_the_record() -> None:
    lb = balancer()
    open_connection(lb)
    backend = CoreBackend(lb)
    app = make_app(backend)
    response = call(app, "POST", "/v1/migrations", COMMIT)
    assert response.status_int == 200, response.text
    assert response.json["confirmed"] is True and response.json["migration"]["outcome"] == "committed"
    assert backend.sent[0][0] == 1 and lb.connections()[0]["member"] == "h2"
    report = dict(COMMIT, phase="report", outcome="migrated", duration_ms=8.25)
    assert call(app, "POST", "/v1/migrations", report).status_int == 200
    listing = call(app, "GET", "/v1/migrations").json
    assert listing["count"] == 1 and listing["counters"] == {"committed": 1, "migrated": 1}
    assert listing["migrations"][0]["duration_ms"] == 8.25
    assert call(app, "GET", "/v1/migrations?limit=1").json["count"] == 1


@pytest.mark.parametrize(
    "body, status, detail",
    [
        (dict(COMMIT, client="10.0.0.1"), 400, "client: expected IPv4:PORT"),
        (dict(COMMIT, member=""), 400, "member: a commit names the member"),
        (dict(COMMIT, phase="report"), 400, "outcome: a report names the outcome"),
        (dict(COMMIT, id="bad id"), 400, "id: String should match pattern"),
        (dict(COMMIT, colour="red"), 400, "colour: unknown key"),
        (dict(COMMIT, client="10.0.0.1:40001"), 404, "no connection from 10.0.0.1:40001"),
        (dict(COMMIT, member="h9"), 404, "no member or router 'h9'"),
        (dict(COMMIT, vip="nope"), 404, "vip 'nope' does not exist"),
    ],
)
def test_rest_refuses_bad_migration_requests(body: dict, status: int, detail: str) -> None:
    lb = balancer()
    open_connection(lb)
    response = call(make_app(CoreBackend(lb)), "POST", "/v1/migrations", body)
    assert response.status_int == status and detail in response.json["detail"], response.text
    assert lb.connections()[0]["member"] == "r1"


def test_rest_commit_without_the_switchs_confirmation_is_a_504() -> None:
    lb = balancer()
    open_connection(lb)
    response = call(make_app(CoreBackend(lb, confirm=False)), "POST", "/v1/migrations", COMMIT)
    assert response.status_int == 504 and response.json["error"] == "timeout"


def test_rest_migrations_limit_and_unknown_parameters_are_checked() -> None:
    app = make_app(CoreBackend(balancer()))
    assert call(app, "GET", "/v1/migrations?limit=0").status_int == 400
    assert call(app, "GET", "/v1/migrations?vip=web").status_int == 400
    assert call(app, "GET", "/v1/migrations").json == {"migrations": [], "count": 0, "counters": {}}
    assert call(app, "DELETE", "/v1/migrations").status_int == 405


def test_routers_whose_agent_failed_take_no_new_connections() -> None:
    config = parse_config(l7_data())
    routers = l7.vip_routers(config.vip("web"), config.fabric)
    assert [r.name for r in l7.live_routers(routers, {})] == ["r1", "r2"]
    assert [r.name for r in l7.live_routers(routers, {"r1": "failed", "r2": "alive", "h1": "failed"})] == ["r2"]
    assert l7.live_routers(routers, {"r1": "gone", "r2": "failed"}) == []


def test_the_classifier_skips_a_router_the_hl_cache_reports_failed() -> None:
    lb = balancer()
    open_connection(lb, port=40000)
    lb.health.cache.hosts["r1"] = HostEntry("r1", ("10.99.0.91", 9101), status="failed")
    open_connection(lb, port=40001)
    assert sorted(c["member"] for c in lb.connections()) == ["r1", "r2"]


def test_fabric_topology_puts_routers_on_the_client_edge_and_the_management_network() -> None:
    topo = FabricTopo(routers=2, mgmt=True)
    hosts = {h["name"]: h for h in topo.fabric_config()["hosts"]}
    assert (hosts["r1"]["ip"], hosts["r1"]["switch"], hosts["r1"]["port"]) == (R1, "s1", 13)
    assert (hosts["r2"]["ip"], hosts["r2"]["port"]) == ("10.0.0.92", 14)
    assert topo.routers == ["r1", "r2"] and topo.mgmt_ip("r2") == "10.99.0.92"
    assert FabricTopo().routers == [] and "r1" not in FabricTopo().hosts()
    with pytest.raises(ValueError, match="routers"):
        FabricTopo(backends=81, routers=1)
