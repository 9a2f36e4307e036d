"""Optimistic concurrency on the operator state: ``ETag`` is its version, ``If-Match`` guards a change (412)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from webob import Request, Response

from nlb_sdn.config import parse_config
from nlb_sdn.rest import make_app
from nlb_sdn.store import StaleVersion, StateError
from tests.unit.test_rest import BASE, FakeBackend

NEW_VIP = {"name": "ssh", "address": "10.0.0.102", "port": 22, "members": [{"address": "10.0.0.14", "port": 22}]}


def send(app: Any, method: str, path: str, body: Any = None, if_match: str | None = None) -> Response:
    """One request through the app, with a JSON ``body`` and an ``If-Match`` header when given."""
    request = Request.blank(path, method=method)
    if body is not None:
        request.body = json.dumps(body).encode()
        request.content_type = "application/json"
    if if_match is not None:
        request.headers["If-Match"] = if_match
    return request.get_response(app)


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend(parse_config(json.loads(json.dumps(BASE)), source="test"))


@pytest.mark.parametrize("path", ["/v1/config", "/v1/vips", "/v1/vips/web", "/v1/vips/web/members/b1"])
def test_reads_of_the_operator_state_carry_its_version_as_etag(backend: FakeBackend, path: str) -> None:
    backend.version = 7
    response = send(make_app(backend), "GET", path)
    assert response.status_int == 200 and response.headers["ETag"] == '"7"'


def test_other_resources_carry_no_etag(backend: FakeBackend) -> None:
    assert "ETag" not in send(make_app(backend), "GET", "/v1/stats").headers


def test_a_change_answers_with_the_new_version(backend: FakeBackend) -> None:
    app = make_app(backend)
    created = send(app, "POST", "/v1/vips", NEW_VIP, if_match='"1"')
    assert created.status_int == 201 and created.headers["ETag"] == '"2"'
    changed = send(app, "PUT", "/v1/vips/web/members/b1", {"weight": 9}, if_match='W/"3", "2"')
    assert changed.status_int == 200 and changed.headers["ETag"] == '"3"'
    assert send(app, "DELETE", "/v1/vips/ssh", if_match="*").headers["ETag"] == '"4"'


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/vips", NEW_VIP),
        ("PUT", "/v1/vips/web/members/b1", {"weight": 9}),
        ("DELETE", "/v1/vips/api", None),
        ("DELETE", "/v1/vips/web/members/b1", None),
    ],
)
def test_if_match_of_an_older_version_is_412_and_changes_nothing(
    backend: FakeBackend, method: str, path: str, body: Any
) -> None:
    backend.version = 5
    response = send(make_app(backend), method, path, body, if_match='"4"')
    assert response.status_int == 412 and response.json["error"] == "precondition_failed"
    assert response.headers["ETag"] == '"5"' and '"5"' in response.json["detail"]
    assert backend.applied == [] and backend.version == 5


def test_a_race_lost_between_the_check_and_the_store_is_412(backend: FakeBackend) -> None:
    app = make_app(backend)

    def another_writer_first(new: Any, expected_version: int | None = None) -> int:
        raise StaleVersion(expected_version or 0, 2)

    backend.apply_config = another_writer_first  # type: ignore[method-assign]
    response = send(app, "PUT", "/v1/vips/web/members/b1", {"weight": 9}, if_match='"1"')
    assert response.status_int == 412 and "version 2, not 1" in response.json["detail"]


def test_without_if_match_the_last_writer_wins(backend: FakeBackend) -> None:
    backend.version = 5
    response = send(make_app(backend), "PUT", "/v1/vips/web/members/b1", {"weight": 9})
    assert response.status_int == 200 and response.headers["ETag"] == '"6"'


def test_a_store_that_cannot_keep_the_change_is_503(backend: FakeBackend) -> None:
    backend.fail = StateError("/var/lib/nlb.state.json", "cannot write the state file: No space left on device")
    response = send(make_app(backend), "POST", "/v1/vips", NEW_VIP)
    assert response.status_int == 503 and response.json["error"] == "unavailable"
    assert "/var/lib/nlb.state.json" in response.json["detail"]


def test_the_state_store_password_is_redacted_in_the_config() -> None:
    data = json.loads(json.dumps(BASE))
    data["controller"] = {"state": {"backend": "redis", "url": "redis://ops:hunter2@10.9.9.9:6379/0"}}
    shown = send(make_app(FakeBackend(parse_config(data, source="test"))), "GET", "/v1/config")
    assert shown.json["controller"]["state"]["url"] == "redis://ops:(redacted)@10.9.9.9:6379/0"
    assert "hunter2" not in shown.text
