"""The event log (issue 13 item 2): the ring's bounds and filters, what the core records, and GET /v1/events."""

from __future__ import annotations

import json
from typing import Any

from webob import Request

from nlb_sdn.config import dump_config, parse_config
from nlb_sdn.events import COALESCE_WINDOW, EventKind, EventLog
from nlb_sdn.rest import make_app, token_sha256
from tests.lib.configs import health_web_config, weighted_web_config
from tests.lib.core import punt_syn, punt_syns
from tests.lib.rest import call
from tests.lib.shell_double import ShellDouble
from tests.unit.test_rest import BASE, FakeBackend

ADMIN_TOKEN = "admin-secret-token-0123456789"


def test_the_ring_keeps_the_newest_events_up_to_its_capacity() -> None:
    log = EventLog(capacity=3)
    for n in range(5):
        log.record(EventKind.STATE, float(n), "web", member=f"h{n}")
    assert [event.detail["member"] for event in log] == ["h2", "h3", "h4"]
    assert [event.id for event in log] == [3, 4, 5]
    assert log.recorded[EventKind.STATE] == 5
    assert log.recorded[EventKind.HEALTH] == 0


def test_select_filters_by_kind_vip_since_and_marker_with_a_limit() -> None:
    log = EventLog()
    log.record(EventKind.STATE, 1.0, "web")
    log.record(EventKind.HEALTH, 2.0, "web")
    log.record(EventKind.STATE, 3.0, "api")
    log.record(EventKind.STATE, 4.0, "web")
    assert [e.id for e in log.select(kind=EventKind.STATE)] == [1, 3, 4]
    assert [e.id for e in log.select(vip="web")] == [1, 2, 4]
    assert [e.id for e in log.select(since=3.0)] == [3, 4]
    assert [e.id for e in log.select(marker=2)] == [3, 4]
    assert [e.id for e in log.select(kind=EventKind.STATE, vip="web", limit=1)] == [1]


def test_repeats_within_the_window_are_coalesced_into_a_count() -> None:
    log = EventLog()
    first = log.record_coalesced(EventKind.CONNECTION_REFUSED, 10.0, "web", "cap", reason="cap")
    log.record_coalesced(EventKind.CONNECTION_REFUSED, 10.5, "web", "cap", reason="cap")
    log.record_coalesced(EventKind.CONNECTION_REFUSED, 10.6, "web", "source_quota", reason="source_quota")
    log.record_coalesced(EventKind.CONNECTION_REFUSED, 10.0 + COALESCE_WINDOW, "web", "cap", reason="cap")
    assert len(log) == 3
    assert first.count == 2
    assert first.as_dict()["count"] == 2 and first.as_dict()["last_at"] == 10.5
    assert log.recorded[EventKind.CONNECTION_REFUSED] == 4


def test_the_core_records_capped_connections_once_per_burst() -> None:
    lb = ShellDouble(weighted_web_config(max_connections=2))
    punt_syns(lb, 5, now=1.0)
    [event] = lb.events.select(kind=EventKind.CONNECTION_REFUSED)
    view = event.as_dict()
    assert (view["vip"], view["reason"], view["count"]) == ("web", "cap", 3)
    assert view["client"] == "10.0.0.1:40002"


def test_the_core_records_a_member_state_change_at_the_next_tick() -> None:
    config = health_web_config()
    lb = ShellDouble(config)
    lb.tick(1.0)
    assert len(lb.events) == 0
    data = dump_config(config)
    data["vips"][0]["members"][0]["state"] = "draining"
    lb.apply_config(parse_config(data), dpids=[], now=2.0)
    lb.tick(2.0)
    [event] = lb.events.select(kind=EventKind.STATE)
    assert event.as_dict() == {
        "id": 1, "at": 2.0, "kind": "state", "vip": "web", "member": "h1", "before": "active", "after": "drained"
    }  # fmt: skip


def test_the_core_records_a_member_health_change() -> None:
    lb = ShellDouble(health_web_config(health="probe"))
    lb.tick(1.0)
    assert lb.member_state("web", "h2")["health"] == "unknown"
    lb.ctx.health.prober.states[("web", "h2")].health = "ok"
    lb.tick(2.0)
    changes = [e.detail for e in lb.events.select(kind=EventKind.HEALTH, vip="web") if e.detail["member"] == "h2"]
    assert changes == [{"member": "h2", "before": "unknown", "after": "ok"}]


def test_a_refused_connection_without_an_eligible_member_is_recorded() -> None:
    lb = ShellDouble(health_web_config(states=("inactive", "inactive", "inactive")))
    punt_syn(lb, now=1.0)
    [event] = lb.events.select(kind=EventKind.CONNECTION_REFUSED)
    assert event.detail["reason"] == "no_member"


def _backend() -> FakeBackend:
    return FakeBackend(parse_config(json.loads(json.dumps(BASE)), source="test"))


def test_rest_edits_are_recorded_with_who_what_before_and_after() -> None:
    data = json.loads(json.dumps(BASE))
    data["controller"] = {"rest": {"tokens": [{"name": "ops", "role": "admin", "sha256": token_sha256(ADMIN_TOKEN)}]}}
    backend = FakeBackend(parse_config(data, source="test"))
    app = make_app(backend)
    request = Request.blank("/v1/vips/web/members/b1", method="PUT")
    request.headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
    request.body, request.content_type = b'{"weight": 5}', "application/json"
    assert request.get_response(app).status_int == 200
    [event] = app.events.select(kind=EventKind.REST_EDIT)
    view = event.as_dict()
    assert (view["who"], view["what"], view["vip"], view["status"]) == (
        "ops",
        "PUT /v1/vips/web/members/b1",
        "web",
        200,
    )
    assert view["before"]["web"]["members"][0]["weight"] == 2
    assert view["after"]["web"]["members"][0]["weight"] == 5


def test_rest_edits_record_added_and_removed_vips_and_not_failures() -> None:
    app = make_app(_backend())
    assert call(app, "DELETE", "/v1/vips/api").status_int == 204
    assert call(app, "DELETE", "/v1/vips/nope").status_int == 404
    [event] = app.events.select(kind=EventKind.REST_EDIT)
    view = event.as_dict()
    assert view["who"] == "anonymous"
    assert view["after"] == {"api": None}
    assert view["before"]["api"]["address"] == "10.0.0.101"


def _page(app: Any, query: str = "") -> Any:
    response = call(app, "GET", "/v1/events" + query)
    assert response.status_int == 200, response.text
    return response.json


def test_get_events_filters_and_pages() -> None:
    events = EventLog()
    for n in range(5):
        events.record(EventKind.STATE if n % 2 else EventKind.SWITCH_CONNECT, float(n), "web" if n else None)
    app = make_app(_backend(), events)
    assert _page(app)["count"] == 5
    assert [e["id"] for e in _page(app, "?kind=state")["events"]] == [2, 4]
    assert [e["id"] for e in _page(app, "?vip=web&since=2")["events"]] == [3, 4, 5]
    first = _page(app, "?limit=2")
    assert ([e["id"] for e in first["events"]], first["next_marker"]) == ([1, 2], 2)
    last = _page(app, "?limit=3&marker=2")
    assert ([e["id"] for e in last["events"]], last["next_marker"]) == ([3, 4, 5], None)


def test_get_events_refuses_bad_parameters() -> None:
    app = make_app(_backend())
    for query, detail in [
        ("?kind=nope", "kind"),
        ("?limit=0", "limit"),
        ("?since=x", "since"),
        ("?marker=1.5", "marker"),
        ("?other=1", "other"),
    ]:
        response = call(app, "GET", "/v1/events" + query)
        assert response.status_int == 400, query
        assert detail in response.json["detail"]
