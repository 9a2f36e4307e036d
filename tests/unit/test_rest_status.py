"""Octavia-style status, JSON merge patches and unit-mix warnings, through the REST API over the real core."""

from __future__ import annotations

import json
from typing import Any

import pytest
from webob import Request

from nlb_sdn.events import EventKind
from nlb_sdn.health.table import Row
from nlb_sdn.rest import make_app
from nlb_sdn.rest.status import (
    OperatingStatus,
    member_operating_status,
    merge_patch,
    vip_operating_status,
)
from tests.lib.configs import WEB_VIP, web_config, web_member
from tests.lib.rest import CoreBackend, call
from tests.lib.shell_double import ShellDouble
from tests.unit.test_hl_cache import Agent, synced


def app_over(members: list[dict[str, Any]]) -> tuple[Any, ShellDouble]:
    """The REST app over a core serving VIP web with ``members``."""
    health = {"enabled": True, "key_file": "/dev/null"}
    lb = ShellDouble(web_config(members, {"health": health}), hl_key=b"k" * 32)
    return make_app(CoreBackend(lb)), lb


def patch(app: Any, path: str, body: Any, media: str = "application/merge-patch+json", **headers: str) -> Any:
    """A PATCH of ``body`` declared as ``media``."""
    request = Request.blank(path, method="PATCH", headers=headers)
    request.body = json.dumps(body).encode()
    request.content_type = media
    return request.get_response(app)


def state(current: str = "active", source: str = "agent", health: str = "ok", target: str = "active") -> dict:
    """A member state view as ``RestBackend.member_state`` answers it."""
    return {"current": current, "health_source": source, "health": health, "configured_target": target}


@pytest.mark.parametrize(
    "view, expected",
    [
        (state(), OperatingStatus.ONLINE),
        (state(source="static"), OperatingStatus.NO_MONITOR),
        (state(current="draining"), OperatingStatus.DRAINING),
        (state(current="drained"), OperatingStatus.DRAINED),
        (state(current="inactive", source="static"), OperatingStatus.OFFLINE),
        (state(health="host not alive"), OperatingStatus.OFFLINE),
        (state(health="no row from any agent"), OperatingStatus.OFFLINE),
        (state(health="failed"), OperatingStatus.ERROR),
        (state(source="probe", health="failed"), OperatingStatus.ERROR),
        (state(source="probe", health="unknown"), OperatingStatus.OFFLINE),
    ],
)
def test_member_operating_status_mapping(view: dict, expected: OperatingStatus) -> None:
    assert member_operating_status(view) is expected


def test_vip_operating_status_aggregates_the_members_kept_active() -> None:
    up, down = state(), state(health="failed")
    assert vip_operating_status([up, up]) is OperatingStatus.ONLINE
    assert vip_operating_status([up, down]) is OperatingStatus.DEGRADED
    assert vip_operating_status([down, down]) is OperatingStatus.ERROR
    assert vip_operating_status([up, state(current="inactive", target="inactive")]) is OperatingStatus.ONLINE
    assert vip_operating_status([]) is OperatingStatus.OFFLINE


def test_merge_patch_follows_rfc_7396() -> None:
    target = {"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]}
    assert merge_patch(target, {"a": "z", "c": {"f": None}, "l": [3]}) == {"a": "z", "c": {"d": "e"}, "l": [3]}
    assert target["c"] == {"d": "e", "f": "g"}  # not mutated


def test_status_tree_of_static_members() -> None:
    app, _ = app_over([web_member(1), web_member(2, state="inactive")])
    response = call(app, "GET", "/v1/vips/web/status")
    assert response.status_int == 200, response.text
    tree = response.json
    assert tree["warnings"] == []
    assert tree["vip"]["provisioning_status"] == "ACTIVE" and tree["vip"]["operating_status"] == "ONLINE"
    members = {m["name"]: m for m in tree["vip"]["members"]}
    assert members["h1"]["operating_status"] == "NO_MONITOR" and members["h1"]["current"] == "active"
    assert members["h2"]["operating_status"] == "OFFLINE"
    assert set(members["h1"]) >= {"provisioning_status", "health", "connections", "target"}
    assert call(app, "GET", "/v1/vips/nope/status").status_int == 404


def test_a_member_whose_agent_stopped_is_not_online() -> None:
    app, lb = app_over([web_member(1, health="agent"), web_member(2, health="agent")])
    agents = [Agent(f"h{i}", (Row(vip=WEB_VIP, vport=80, pip=f"10.0.0.1{i}", pport=80, health="ok"),)) for i in (1, 2)]
    for index, agent in enumerate(agents):
        synced(lb.health.cache, agent, now=1.0, addr=(f"10.0.0.1{index + 1}", 9101))
    tree = call(app, "GET", "/v1/vips/web/status").json
    assert {m["name"]: m["operating_status"] for m in tree["vip"]["members"]} == {"h1": "ONLINE", "h2": "ONLINE"}
    lb.health.cache.apply(agents[0].msg("goodbye", reason="SIGTERM"), ("10.0.0.11", 9101), 2.0)
    tree = call(app, "GET", "/v1/vips/web/status").json
    members = {m["name"]: m for m in tree["vip"]["members"]}
    assert members["h1"]["operating_status"] == "OFFLINE" and members["h1"]["health"] == "host not alive"
    assert members["h1"]["current"] == "active"  # the load-balancing state alone would still read active
    assert tree["vip"]["operating_status"] == "DEGRADED"
    state_view = call(app, "GET", "/v1/vips/web/members/h1/state").json
    assert state_view["operating_status"] == "OFFLINE" and state_view["provisioning_status"] == "ACTIVE"


def test_patch_vip_address_keeps_the_members() -> None:
    app, lb = app_over([web_member(1), web_member(2)])
    response = patch(app, "/v1/vips/web", {"address": "10.0.0.200", "idle_timeout": 30})
    assert response.status_int == 200, response.text
    assert response.json["address"] == "10.0.0.200" and response.headers["ETag"] == '"1"'
    assert [m.name for m in lb.config.vip("web").members] == ["h1", "h2"]
    assert lb.config.vip("web").address == "10.0.0.200" and lb.config.vip("web").idle_timeout == 30
    assert patch(app, "/v1/vips/web", {"port": 8080}, media="application/json").status_int == 200
    assert lb.config.vip("web").port == 8080


def test_patch_vip_refusals_change_nothing() -> None:
    app, lb = app_over([web_member(1)])
    before = lb.config
    assert patch(app, "/v1/vips/web", {"name": "other"}).status_int == 400
    assert patch(app, "/v1/vips/web", {"port": "eighty"}).status_int == 400
    assert patch(app, "/v1/vips/web", {"port": 81}, media="text/plain").status_int == 415
    assert patch(app, "/v1/vips/web", {"port": 81}, **{"If-Match": '"7"'}).status_int == 412
    assert patch(app, "/v1/vips/nope", {"port": 81}).status_int == 404
    assert lb.config is before


def test_patch_member_changes_only_what_it_names() -> None:
    app, lb = app_over([web_member(1, weight=3), web_member(2)])
    response = patch(app, "/v1/vips/web/members/h1", {"state": "draining"})
    assert response.status_int == 200, response.text
    assert (response.json["state"], response.json["weight"]) == ("draining", 3)
    member = lb.config.vip("web").member("h1")
    assert member is not None and (member.state, member.weight) == ("draining", 3)
    response = patch(app, "/v1/vips/web/members/10.0.0.12:80", {"weight": None})  # null: back to the default
    assert response.status_int == 200 and response.json["weight"] == 1
    conflict = patch(app, "/v1/vips/web/members/h1", {"address": "10.0.0.12"})
    assert conflict.status_int == 409 and "h2" in conflict.json["detail"]
    assert patch(app, "/v1/vips/web/members/h9", {"weight": 2}).status_int == 404


def test_mixed_units_are_warned_about_in_answers_and_logged_once() -> None:
    app, _ = app_over([web_member(1, health="agent"), web_member(2, weight=2), web_member(3)])
    answers = [
        call(app, "GET", "/v1/vips/web").json,
        call(app, "GET", "/v1/vips/web/allotment").json,
        call(app, "GET", "/v1/vips/web/status").json,
        patch(app, "/v1/vips/web", {"idle_timeout": 20}).json,
        call(app, "PUT", "/v1/vips/web/members/h2", {"weight": 3}).json,
    ]
    for answer in answers:
        assert len(answer["warnings"]) == 1
        assert "h1" in answer["warnings"][0] and "h2, h3" in answer["warnings"][0]
    logged = [event for event in app.events if event.kind is EventKind.WARNING]
    assert len(logged) == 1 and logged[0].vip == "web"
    assert call(app, "GET", "/v1/events?kind=warning").json["count"] == 1
    patch(app, "/v1/vips/web/members/h1", {"health": "static"})
    assert "warnings" not in call(app, "GET", "/v1/vips/web").json
    patch(app, "/v1/vips/web/members/h1", {"health": "agent"})  # the mix is back: recorded again, once
    call(app, "GET", "/v1/vips/web/status")
    assert len([event for event in app.events if event.kind is EventKind.WARNING]) == 2


def test_plain_vip_and_member_answers_carry_both_statuses() -> None:
    app, lb = app_over([web_member(1, health="agent"), web_member(2, health="agent"), web_member(3, state="inactive")])
    agent = Agent("h1", (Row(vip=WEB_VIP, vport=80, pip="10.0.0.11", pport=80, health="ok"),))
    synced(lb.health.cache, agent, now=1.0, addr=("10.0.0.11", 9101))  # h2's agent never reports
    expected = {"h1": "ONLINE", "h2": "OFFLINE", "h3": "OFFLINE"}
    listed = call(app, "GET", "/v1/vips").json["vips"][0]
    single = call(app, "GET", "/v1/vips/web").json
    for vip in (listed, single):
        assert (vip["provisioning_status"], vip["operating_status"]) == ("ACTIVE", "DEGRADED")
        assert {m["name"]: m["operating_status"] for m in vip["members"]} == expected
        assert {m["provisioning_status"] for m in vip["members"]} == {"ACTIVE"}
    members = call(app, "GET", "/v1/vips/web/members").json["members"]
    assert {m["name"]: m["operating_status"] for m in members} == expected
    paged = call(app, "GET", "/v1/vips/web/members?limit=1").json
    assert [m["operating_status"] for m in paged["members"]] == ["ONLINE"] and paged["next_marker"] == "h1"
    one = call(app, "GET", "/v1/vips/web/members/10.0.0.11:80").json
    assert (one["name"], one["provisioning_status"], one["operating_status"]) == ("h1", "ACTIVE", "ONLINE")
    drained = patch(app, "/v1/vips/web/members/h1", {"state": "draining"}).json
    assert drained["operating_status"] == "DRAINED"  # no connection left to drain
    added = call(
        app,
        "POST",
        "/v1/vips/web/members",
        {"name": "h4", "address": "10.0.0.14", "port": 80, "mac": "00:00:00:00:00:14"},
    ).json
    assert (added["name"], added["operating_status"]) == ("h4", "NO_MONITOR")
    weighed = call(app, "PUT", "/v1/vips/web/members/h4", {"weight": 3}).json
    assert (weighed["weight"], weighed["operating_status"]) == (3, "NO_MONITOR")
    patched = patch(app, "/v1/vips/web", {"idle_timeout": 20}).json
    assert patched["operating_status"] == "DEGRADED" and len(patched["members"]) == 4
    app_empty, _ = app_over([])
    created = call(app_empty, "POST", "/v1/vips", {"name": "api", "address": "10.0.0.101", "port": 443}).json
    assert (created["provisioning_status"], created["operating_status"], created["members"]) == (
        "ACTIVE",
        "OFFLINE",
        [],
    )


def test_an_answer_sent_back_as_a_body_is_accepted() -> None:
    app, lb = app_over([web_member(1, health="agent"), web_member(2)])
    answer = call(app, "GET", "/v1/vips/web").json
    assert answer["warnings"] and answer["members"][0]["operating_status"] == "OFFLINE"
    replaced = call(app, "PUT", "/v1/vips/web", {**answer, "idle_timeout": 25})
    assert replaced.status_int == 200, replaced.text
    assert lb.config.vip("web").idle_timeout == 25 and [m.name for m in lb.config.vip("web").members] == ["h1", "h2"]
    assert patch(app, "/v1/vips/web", {**answer, "port": 81}).status_int == 200
    member = call(app, "GET", "/v1/vips/web/members/h2").json
    assert patch(app, "/v1/vips/web/members/h2", {**member, "weight": 4}).status_int == 200
    assert call(app, "POST", "/v1/vips", {**answer, "name": "web2", "address": "10.0.0.201"}).status_int == 201
