"""REST hardening (issue 12 items 1 and 5): bearer tokens and roles, JSON-only bodies, redacted secrets, strict
types and addresses, 4xx for every client mistake, pagination and bounded migration counters."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from webob import Request

from nlb_sdn.config import ConfigError, dump_config, load_config, parse_config
from nlb_sdn.core.l7 import MIGRATION_REASONS, MigrationLog
from nlb_sdn.migration.sender import FAILURE_REASONS
from nlb_sdn.rest import make_app, token_sha256
from tests.lib.rest import call
from tests.unit.test_rest import BASE, CONNECTIONS, GOOD_VIP, FakeBackend

ADMIN_TOKEN = "admin-secret-token-0123456789"
READER_TOKEN = "reader-secret-token-9876543210"
REDIS_URL = "redis://lbu:hunter2-password@10.9.9.9:6379/0"


def config_data(**rest: Any) -> dict[str, Any]:
    """BASE with the given ``controller.rest`` keys."""
    data = json.loads(json.dumps(BASE))
    data["controller"] = {"rest": rest}
    return data


def secured_backend() -> FakeBackend:
    """A backend whose config has an admin and a reader token and a Redis URL with a password."""
    tokens = [
        {"name": "ops", "role": "admin", "sha256": token_sha256(ADMIN_TOKEN)},
        {"name": "dash", "role": "reader", "sha256": token_sha256(READER_TOKEN)},
    ]
    data = config_data(tokens=tokens, host="0.0.0.0")
    data["controller"]["dam"] = {"backend": "redis", "url": REDIS_URL}
    return FakeBackend(parse_config(data, source="test"))


def request(app: Any, method: str, path: str, token: str | None = None, body: Any = None, **headers: str) -> Any:
    """One request through the WSGI app with an optional bearer token and JSON body."""
    blank = Request.blank(path, method=method)
    if body is not None:
        blank.body = json.dumps(body).encode()
        blank.content_type = "application/json"
    if token is not None:
        blank.headers["Authorization"] = f"Bearer {token}"
    blank.headers.update(headers)
    return blank.get_response(app)


def assert_error(response: Any, status: int, code: str, *in_detail: str) -> None:
    """``response`` is the JSON error ``code`` with ``status`` and a detail containing each of ``in_detail``."""
    assert response.status_int == status, response.text
    assert response.json["error"] == code
    for text in in_detail:
        assert text in response.json["detail"]


# --- authentication and authorization ---------------------------------------------------------------------------


def test_no_token_is_401_with_a_bearer_challenge() -> None:
    response = request(make_app(secured_backend()), "GET", "/v1/vips")
    assert_error(response, 401, "unauthorized", "bearer token is required")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("authorization", ["Bearer wrong-token", "Basic b3BzOnB3", "Bearer "])
def test_unknown_or_malformed_credentials_are_401(authorization: str) -> None:
    response = request(make_app(secured_backend()), "GET", "/v1/vips", Authorization=authorization)
    assert_error(response, 401, "unauthorized", "Authorization")
    assert "error=" in response.headers["WWW-Authenticate"]


def test_reader_reads_but_may_not_change() -> None:
    backend = secured_backend()
    app = make_app(backend)
    assert request(app, "GET", "/v1/vips/web", READER_TOKEN).status_int == 200
    assert_error(request(app, "POST", "/v1/vips", READER_TOKEN, GOOD_VIP), 403, "forbidden", "'dash'", "admin")
    assert_error(request(app, "DELETE", "/v1/vips/web", READER_TOKEN), 403, "forbidden")
    assert backend.applied == []


def test_admin_changes() -> None:
    backend = secured_backend()
    app = make_app(backend)
    assert request(app, "POST", "/v1/vips", ADMIN_TOKEN, GOOD_VIP).status_int == 201
    assert request(app, "DELETE", "/v1/vips/web", ADMIN_TOKEN).status_int == 204
    assert len(backend.applied) == 2


def test_open_on_loopback_without_tokens() -> None:
    app = make_app(FakeBackend(parse_config(config_data(), source="test")))
    assert request(app, "POST", "/v1/vips", None, GOOD_VIP).status_int == 201


def test_tokens_never_appear_in_responses_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    app = make_app(secured_backend())
    texts = [
        request(app, "GET", "/v1/config", ADMIN_TOKEN).text,
        request(app, "POST", "/v1/vips", READER_TOKEN, GOOD_VIP).text,
        request(app, "GET", "/v1/vips", "not-" + ADMIN_TOKEN).text,
        request(app, "POST", "/v1/vips", ADMIN_TOKEN, GOOD_VIP).text,
    ]
    secrets = [ADMIN_TOKEN, READER_TOKEN, token_sha256(ADMIN_TOKEN), token_sha256(READER_TOKEN), "hunter2"]
    for secret in secrets:
        assert all(secret not in text for text in texts), secret
        assert secret not in caplog.text, secret


def test_config_redacts_the_redis_password_and_token_hashes() -> None:
    backend = secured_backend()
    shown = request(make_app(backend), "GET", "/v1/config", READER_TOKEN).json
    assert shown["controller"]["dam"]["url"] == "redis://lbu:(redacted)@10.9.9.9:6379/0"
    assert {token["sha256"] for token in shown["controller"]["rest"]["tokens"]} == {"(redacted)"}
    assert backend.config.controller.dam.url == REDIS_URL  # only the view is redacted


def test_a_non_loopback_bind_without_tokens_refuses_to_start() -> None:
    with pytest.raises(ConfigError, match=r"controller\.rest: host 0\.0\.0\.0 is not a loopback address"):
        parse_config(config_data(host="0.0.0.0"))
    assert parse_config(config_data(host="0.0.0.0", allow_unauthenticated=True)).controller.rest.open
    assert parse_config(config_data(host="::1")).controller.rest.open


def test_token_hashes_are_hex_sha256() -> None:
    with pytest.raises(ConfigError, match=r"tokens\[ops\].sha256"):
        parse_config(config_data(tokens=[{"name": "ops", "role": "admin", "sha256": ADMIN_TOKEN}]))


# --- JSON bodies only -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
def test_a_cross_origin_simple_post_is_415(app: Any, backend: FakeBackend, content_type: str) -> None:
    blank = Request.blank("/v1/vips/web/members", method="POST", content_type=content_type)
    blank.body = json.dumps({"address": "10.0.0.14", "port": 8080, "weight": 10000}).encode()
    assert_error(blank.get_response(app), 415, "unsupported_media_type", content_type)
    assert backend.applied == []


def test_a_utf16_body_is_refused(app: Any, backend: FakeBackend) -> None:
    raw = json.dumps(GOOD_VIP).encode("utf-16")
    assert_error(call(app, "POST", "/v1/vips", raw=raw), 400, "bad_json", "not UTF-8")
    blank = Request.blank("/v1/vips", method="POST", content_type="application/json; charset=utf-16")
    blank.body = raw
    assert_error(blank.get_response(app), 415, "unsupported_media_type", "utf-16")
    assert backend.applied == []


@pytest.mark.parametrize(
    "raw",
    [
        b'{"address": "10.0.0.14", "port": 8080, "port": 9090}',
        b'{"address": "10.0.0.14", "port": 8080, "weight": NaN}',
    ],
)
def test_duplicate_keys_and_non_json_constants_are_400(app: Any, backend: FakeBackend, raw: bytes) -> None:
    assert_error(call(app, "POST", "/v1/vips/web/members", raw=raw), 400, "bad_json")
    assert backend.applied == []


@pytest.mark.parametrize(
    ("member", "key"),
    [
        ({"address": "10.0.0.14", "port": 8080, "weight": "5"}, "weight"),
        ({"address": "10.0.0.14", "port": 8080, "weight": True}, "weight"),
        ({"address": "10.0.0.14", "port": "80"}, "port"),
        ({"address": "0.0.0.0", "port": 80}, "address"),
        ({"address": "127.0.0.1", "port": 80}, "address"),
        ({"address": "224.1.2.3", "port": 80}, "address"),
        ({"address": "255.255.255.255", "port": 80}, "address"),
    ],
)
def test_strict_member_types_and_addresses(app: Any, backend: FakeBackend, member: dict[str, Any], key: str) -> None:
    assert_error(call(app, "POST", "/v1/vips/web/members", member), 400, "invalid", key)
    assert backend.applied == []


def test_a_vip_on_an_unusable_address_is_400(app: Any) -> None:
    assert_error(call(app, "POST", "/v1/vips", dict(GOOD_VIP, address="0.0.0.0")), 400, "invalid", "unspecified")


def test_a_string_weight_in_a_config_file_is_an_error_naming_the_key(tmp_path: Any) -> None:
    data = json.loads(json.dumps(BASE))
    data["vips"][0]["members"][0]["weight"] = "5"
    path = tmp_path / "lb.yaml"
    path.write_text(json.dumps(data))  # JSON is YAML
    with pytest.raises(ConfigError, match=r"vips\[web\].members\[b1\].weight: Input should be a valid integer"):
        load_config(path)


# --- 4xx for client mistakes, 5xx logged --------------------------------------------------------------------------


def test_a_path_or_query_that_is_not_utf8_is_400(app: Any) -> None:
    assert_error(call(app, "GET", "/v1/vips/%ff"), 400, "bad_path")
    assert_error(call(app, "GET", "/v1/connections?vip=%ff"), 400, "bad_path")


def test_a_bad_dam_cursor_is_400(backend: FakeBackend) -> None:
    def dam_page(kind: str, cursor: str | None, count: int) -> dict[str, Any]:
        return {"kind": kind, "atoms": [], "count": 0, "next_cursor": str(int(cursor or 0))}

    backend.dam_page = dam_page  # type: ignore[attr-defined]
    app = make_app(backend)
    assert call(app, "GET", "/v1/dam?cursor=12").status_int == 200
    assert_error(call(app, "GET", "/v1/dam?cursor=abc"), 400, "invalid", "cursor")
    assert_error(call(app, "GET", "/v1/dam?cursor=" + "1" * 600), 400, "invalid", "cursor")


def test_every_5xx_is_logged_with_a_traceback(app: Any, backend: FakeBackend, caplog: pytest.LogCaptureFixture) -> None:
    backend.fail = RuntimeError("switch s1 went away")
    with caplog.at_level(logging.ERROR, logger="nlb_sdn.rest.app"):
        assert call(app, "DELETE", "/v1/vips/web").status_int == 500
    assert caplog.records and caplog.records[-1].exc_info is not None


# --- pagination ---------------------------------------------------------------------------------------------------


def test_connections_in_pages(app: Any) -> None:
    first = call(app, "GET", "/v1/connections?limit=2").json
    assert first["count"] == 2 and first["next_marker"] == "web/10.0.0.1:40000"
    second = call(app, "GET", f"/v1/connections?limit=2&marker={first['next_marker']}").json
    assert second["count"] == 1 and second["next_marker"] is None
    by_client = sorted(c["client"] for c in first["connections"] + second["connections"])
    assert by_client == sorted(c["client"] for c in CONNECTIONS)
    assert "next_marker" not in call(app, "GET", "/v1/connections").json  # the unpaged shape is unchanged
    assert_error(call(app, "GET", "/v1/connections?limit=0"), 400, "invalid", "limit")
    assert_error(call(app, "GET", "/v1/connections?limit=x"), 400, "invalid", "limit")


def test_sessions_in_pages(backend: FakeBackend) -> None:
    rows = [{"id": f"session-{n}", "vip": "web", "member": "b1"} for n in range(5)]
    backend.sessions = lambda vip=None, member=None: rows  # type: ignore[attr-defined]
    app = make_app(backend)
    page = call(app, "GET", "/v1/sessions?limit=3").json
    assert [s["id"] for s in page["sessions"]] == [r["id"] for r in rows[:3]]
    rest = call(app, "GET", f"/v1/sessions?marker={page['next_marker']}").json
    assert [s["id"] for s in rest["sessions"]] == [r["id"] for r in rows[3:]] and rest["next_marker"] is None


# --- migrations -------------------------------------------------------------------------------------------------


def test_a_migration_for_an_unknown_vip_is_404(app: Any) -> None:
    body = {"phase": "report", "id": "m1", "vip": "nope", "client": "10.0.0.1:40000", "outcome": "migrated"}
    assert_error(call(app, "POST", "/v1/migrations", body), 404, "not_found", "nope")


def test_migration_reason_counters_are_bounded() -> None:
    log = MigrationLog()
    for n in range(100):
        log.reported(f"m{n}", "10.0.0.1:1", "web", "r1", "h2", "declined", f"made-up-{n}", None, 0.0)
    log.reported("m100", "10.0.0.1:1", "web", "r1", "h2", "declined", "timeout", None, 0.0)
    assert {k: v for k, v in log.counters.items() if k.startswith("reason:")} == {
        "reason:other": 100,
        "reason:timeout": 1,
    }


def test_known_migration_reasons_are_the_senders() -> None:
    assert frozenset(FAILURE_REASONS) == MIGRATION_REASONS


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend(parse_config(json.loads(json.dumps(BASE)), source="test"))


@pytest.fixture
def app(backend: FakeBackend) -> Any:
    return make_app(backend)


def test_dump_round_trips_tokens() -> None:
    backend = secured_backend()
    assert parse_config(dump_config(backend.config)) == backend.config
