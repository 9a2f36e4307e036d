"""The OpenAPI document (``GET /v1/openapi.json``) and the one list envelope (``limit``, ``marker``, filters)."""

from __future__ import annotations

from typing import Any

import pytest

from nlb_sdn.config import Vip
from nlb_sdn.dam.atoms import route_key
from nlb_sdn.rest import make_app
from nlb_sdn.rest.openapi import OPERATIONS, openapi_document, path_template
from tests.lib.rest import call
from tests.unit.test_properties_rest import CoreBackend
from tests.unit.test_rest import assert_error
from tests.unit.test_rest_security import READER_TOKEN, request, secured_backend


@pytest.fixture
def app() -> Any:
    return make_app(CoreBackend())


def served(app: Any) -> set[tuple[str, str]]:
    """Every (method, OpenAPI path) the app routes."""
    return {(method, path_template(pattern.pattern)) for pattern, methods in app.routes for method in methods}


def test_every_route_has_an_operation_and_every_operation_a_route(app: Any) -> None:
    documented = {(method.upper(), path) for path, item in openapi_document()["paths"].items() for method in item}
    assert served(app) == documented
    assert len(OPERATIONS) == len(documented)


def test_path_template_names_the_regex_groups() -> None:
    assert path_template(r"/v1/vips/(?P<vip>[^/]+)/members/(?P<member>[^/]+)\Z") == "/v1/vips/{vip}/members/{member}"


def test_the_document_is_served_as_json(app: Any) -> None:
    response = call(app, "GET", "/v1/openapi.json")
    assert response.status_int == 200 and response.content_type == "application/json"
    assert response.json == openapi_document()
    assert response.json["openapi"].startswith("3.")


def test_a_reader_token_reads_the_document_and_none_is_401() -> None:
    app = make_app(secured_backend())
    assert request(app, "GET", "/v1/openapi.json", READER_TOKEN).status_int == 200
    assert request(app, "GET", "/v1/openapi.json").status_int == 401


def test_the_document_declares_bearer_auth_and_the_error_shape() -> None:
    document = openapi_document()
    assert document["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    post = document["paths"]["/v1/vips"]["post"]
    assert {"201", "400", "401", "403", "409", "413", "415"} <= set(post["responses"])
    assert post["responses"]["409"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"
    }
    assert post["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Vip"}
    assert document["components"]["schemas"]["Vip"]["properties"].keys() == Vip.model_fields.keys()
    assert "name" not in document["components"]["schemas"]["VipPut"]["required"]
    assert document["components"]["schemas"]["Member"]["properties"]["address"]["anyOf"] == [
        {"format": "ipv4"},
        {"format": "ipv6"},
    ]  # a member's address is IPv4 or IPv6 (dual stack)


# --- the list envelope ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path, key",
    [
        ("/v1/vips", "vips"),
        ("/v1/vips/web/members", "members"),
        ("/v1/connections", "connections"),
        ("/v1/sessions", "sessions"),
        ("/v1/migrations", "migrations"),
        ("/v1/dam", "atoms"),
    ],
)
def test_every_list_has_the_envelope_and_pages(app: Any, path: str, key: str) -> None:
    whole = call(app, "GET", path).json
    assert whole["count"] == len(whole[key])
    paged = call(app, "GET", f"{path}?limit=1").json
    assert paged["count"] == len(paged[key]) <= 1 and "next_marker" in paged
    assert_error(call(app, "GET", f"{path}?colour=red"), 400, "invalid", "colour")


def test_vips_page_by_name_and_filter_by_mode(app: Any) -> None:
    first = call(app, "GET", "/v1/vips?limit=1").json
    assert [v["name"] for v in first["vips"]] == ["front"] and first["next_marker"] == "front"
    second = call(app, "GET", "/v1/vips?limit=1&marker=front").json
    assert [v["name"] for v in second["vips"]] == ["web"] and second["next_marker"] is None
    assert [v["name"] for v in call(app, "GET", "/v1/vips?mode=l7").json["vips"]] == ["front"]
    assert_error(call(app, "GET", "/v1/vips?mode=fast"), 400, "invalid", "mode")


def test_members_page_and_filter_by_state(app: Any) -> None:
    assert call(app, "PUT", "/v1/vips/web/members/h2/state", {"state": "draining"}).status_int == 200
    page = call(app, "GET", "/v1/vips/web/members?limit=2").json
    assert [m["name"] for m in page["members"]] == ["h1", "h2"] and page["next_marker"] == "h2"
    draining = call(app, "GET", "/v1/vips/web/members?state=draining").json
    assert [m["name"] for m in draining["members"]] == ["h2"] and draining["count"] == 1


def test_migrations_page_after_a_marker(app: Any) -> None:
    backend = app.backend
    for n in range(3):
        backend.lb.migrations.committed(f"m{n}", f"10.0.0.1:{40000 + n}", "front", "c1", "h1", 1.0 + n)
    newest = call(app, "GET", "/v1/migrations?limit=1").json
    assert [m["id"] for m in newest["migrations"]] == ["m2"] and newest["next_marker"] is None
    after = call(app, "GET", "/v1/migrations?marker=m0&limit=1").json
    assert [m["id"] for m in after["migrations"]] == ["m1"] and after["next_marker"] == "m1"
    last = call(app, "GET", "/v1/migrations?marker=m1").json
    assert [m["id"] for m in last["migrations"]] == ["m2"] and last["next_marker"] is None
    assert_error(call(app, "GET", "/v1/migrations?marker=gone"), 400, "invalid", "marker")
    assert_error(call(app, "GET", "/v1/migrations?limit=%C2%B2"), 400, "invalid", "limit")


def test_dam_takes_limit_and_marker_and_answers_next_marker(app: Any) -> None:
    backend = app.backend
    for n in range(3):
        backend.dam.put(route_key("10.0.0.1", 40000 + n, "10.0.0.100", 80), {"n": n}, origin="lbu", ttl=None, now=1.0)
    first = call(app, "GET", "/v1/dam?kind=route&limit=2").json
    assert first["count"] == 2 and first["next_marker"] == first["next_cursor"] is not None
    rest = call(app, "GET", f"/v1/dam?kind=route&limit=2&marker={first['next_marker']}").json
    assert rest["count"] == 1 and rest["next_marker"] is None
    assert call(app, "GET", "/v1/dam?kind=route&count=2").json["count"] == 2
