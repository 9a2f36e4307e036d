"""Unit tests of the REST API: WSGI requests against a test backend over a real Config, and the eventlet server."""

from __future__ import annotations

import errno
import io
import json
from typing import Any

import pytest
from webob import Request

from nlb_sdn.config import Config, ConfigError, dump_config, parse_config
from nlb_sdn.rest import MAX_BODY, RestBackend, listen, make_app, serve
from nlb_sdn.store import StaleVersion
from tests.lib.net import free_port
from tests.lib.rest import call

BASE: dict[str, Any] = {
    "vips": [
        {
            "name": "web",
            "address": "10.0.0.100",
            "port": 80,
            "members": [
                {"name": "b1", "address": "10.0.0.11", "port": 8080, "weight": 2, "mac": ""},
                {"address": "10.0.0.12", "port": 8080},
            ],
        },
        {"name": "api", "address": "10.0.0.101", "port": 443, "members": [{"address": "10.0.0.13", "port": 8443}]},
    ],
    "fabric": {
        "switches": [{"name": "s1", "dpid": 1}],
        "hosts": [
            {"name": "c1", "ip": "10.0.0.1", "mac": "00:00:00:00:00:01", "switch": "s1", "port": 1},
        ]
        + [
            {"name": f"h{n}", "ip": f"10.0.0.1{n}", "mac": f"00:00:00:00:00:1{n}", "switch": "s1", "port": 1 + n}
            for n in range(1, 5)
        ],
    },
}

CONNECTIONS = [
    {"vip": "web", "member": "b1", "client": "10.0.0.1:40000"},
    {"vip": "web", "member": "10.0.0.12:8080", "client": "10.0.0.1:40001"},
    {"vip": "api", "member": "10.0.0.13:8443", "client": "10.0.0.1:40002"},
]

STATS = {"packet_in": 7, "vips": {"web": {"connections": 2}}}


class FakeBackend:
    """A RestBackend over a real Config: records applied configs and connection queries."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.applied: list[Config] = []
        self.queries: list[tuple[str | None, str | None]] = []
        self.fail: Exception | None = None
        self.version = 1

    def current_config(self) -> Config:
        return self.config

    def config_version(self) -> int:
        return self.version

    def apply_config(self, new: Config, expected_version: int | None = None) -> int:
        self.applied.append(new)
        if self.fail is not None:
            raise self.fail
        if expected_version is not None and expected_version != self.version:
            raise StaleVersion(expected_version, self.version)
        self.config = new
        self.version += 1
        return self.version

    def connections(self, vip: str | None = None, member: str | None = None) -> list[dict]:
        self.queries.append((vip, member))
        return [c for c in CONNECTIONS if vip in (None, c["vip"]) and member in (None, c["member"])]

    def stats(self) -> dict:
        return STATS

    def member_state(self, vip: str, member: str) -> dict:
        """Every member serves, unmonitored (no core behind this backend)."""
        view = {"current": "active", "health_source": "static", "health": "ok", "configured_target": "active"}
        return {"vip": vip, "member": member, **view}


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend(parse_config(json.loads(json.dumps(BASE)), source="test"))


@pytest.fixture
def app(backend: FakeBackend):
    return make_app(backend)


def vip_of(backend: FakeBackend, name: str) -> dict[str, Any]:
    """The VIP called ``name`` in the backend's current config, as plain data."""
    return next(v for v in dump_config(backend.config)["vips"] if v["name"] == name)


def answered_member(member: dict[str, Any]) -> dict[str, Any]:
    """A member as the API answers it over FakeBackend: as in the config, static, so serving unmonitored."""
    return {**member, "provisioning_status": "ACTIVE", "operating_status": "NO_MONITOR"}


def answered_vip(vip: dict[str, Any]) -> dict[str, Any]:
    """A VIP as the API answers it over FakeBackend: as in the config, with its and its members' statuses."""
    members = [answered_member(member) for member in vip["members"]]
    operating = "ONLINE" if members else "OFFLINE"
    return {**vip, "members": members, "provisioning_status": "ACTIVE", "operating_status": operating}


def answer_of(backend: FakeBackend, name: str) -> dict[str, Any]:
    """The answer for the VIP called ``name`` in the backend's current config."""
    return answered_vip(vip_of(backend, name))


def assert_error(response, status: int, code: str, *in_detail: str) -> None:
    """The response is a JSON error with this status and code, and its detail mentions each of ``in_detail``."""
    assert response.status_int == status, response.text
    assert response.content_type == "application/json"
    assert set(response.json) == {"error", "detail"}
    assert response.json["error"] == code
    for text in in_detail:
        assert text in response.json["detail"]


def test_fake_backend_is_a_rest_backend(backend: FakeBackend) -> None:
    typed: RestBackend = backend
    assert typed.current_config() is backend.config


# --- reads --------------------------------------------------------------------------------------------------------


def test_list_vips(app, backend: FakeBackend) -> None:
    response = call(app, "GET", "/v1/vips")
    assert response.status_int == 200
    assert response.content_type == "application/json"
    vips = dump_config(backend.config)["vips"]
    assert response.json == {"vips": [answered_vip(vip) for vip in vips], "count": len(vips)}
    assert response.json["vips"][0]["members"][1]["name"] == "10.0.0.12:8080"
    assert response.json["vips"][0]["mac"] == "02:4e:0a:00:00:64"


def test_get_vip(app, backend: FakeBackend) -> None:
    response = call(app, "GET", "/v1/vips/api")
    assert response.status_int == 200
    assert response.json == answer_of(backend, "api")


def test_list_members(app, backend: FakeBackend) -> None:
    response = call(app, "GET", "/v1/vips/web/members")
    assert response.status_int == 200
    members = [answered_member(member) for member in vip_of(backend, "web")["members"]]
    assert response.json == {"members": members, "count": 2}


@pytest.mark.parametrize("ident", ["b1", "10.0.0.11:8080"])
def test_get_member_by_name_or_endpoint(app, ident: str) -> None:
    response = call(app, "GET", f"/v1/vips/web/members/{ident}")
    assert response.status_int == 200
    assert response.json == answered_member(
        {
            "name": "b1",
            "address": "10.0.0.11",
            "port": 8080,
            "weight": 2,
            "mac": "",
            "health": "static",
            "state": "active",
        }
    )


def test_config(app, backend: FakeBackend) -> None:
    response = call(app, "GET", "/v1/config")
    assert response.status_int == 200
    assert response.json == dump_config(backend.config)


def test_stats_as_is(app) -> None:
    response = call(app, "GET", "/v1/stats")
    assert response.status_int == 200
    assert response.content_type == "application/json"
    assert response.json == STATS


def test_connections_unfiltered(app, backend: FakeBackend) -> None:
    response = call(app, "GET", "/v1/connections")
    assert response.status_int == 200
    assert response.json == {"connections": CONNECTIONS, "count": 3}
    assert backend.queries == [(None, None)]


def test_connections_empty_filters_mean_none(app, backend: FakeBackend) -> None:
    response = call(app, "GET", "/v1/connections?vip=&member=")
    assert response.json["count"] == 3
    assert backend.queries == [(None, None)]


def test_connections_filter_passes_member_name(app, backend: FakeBackend) -> None:
    response = call(app, "GET", "/v1/connections?vip=web&member=10.0.0.11:8080")
    assert response.status_int == 200
    assert response.json == {"connections": [CONNECTIONS[0]], "count": 1}
    assert backend.queries == [("web", "b1")]


def test_connections_member_without_vip(app, backend: FakeBackend) -> None:
    response = call(app, "GET", "/v1/connections?member=10.0.0.13:8443")
    assert response.json["count"] == 1
    assert backend.queries == [(None, "10.0.0.13:8443")]


@pytest.mark.parametrize(
    "query, detail",
    [("vip=nope", "'nope'"), ("vip=api&member=b1", "'b1'"), ("member=10.9.9.9:1", "10.9.9.9:1")],
)
def test_connections_unknown_filter(app, backend: FakeBackend, query: str, detail: str) -> None:
    assert_error(call(app, "GET", f"/v1/connections?{query}"), 404, "not_found", detail)
    assert backend.queries == []


def test_connections_unknown_parameter(app, backend: FakeBackend) -> None:
    assert_error(call(app, "GET", "/v1/connections?client=x"), 400, "invalid", "client")
    assert backend.queries == []


# --- VIP changes --------------------------------------------------------------------------------------------------


def test_create_vip(app, backend: FakeBackend) -> None:
    old = backend.config
    old_data = dump_config(old)
    body = {"name": "ssh", "address": "10.0.0.102", "port": 22, "members": [{"address": "10.0.0.14", "port": 22}]}
    response = call(app, "POST", "/v1/vips", body)
    assert response.status_int == 201, response.text
    assert response.location == "http://localhost/v1/vips/ssh"
    assert response.json["name"] == "ssh"
    assert response.json["mac"] == "02:4e:0a:00:00:66"
    assert response.json["members"] == [
        answered_member(
            {
                "name": "10.0.0.14:22",
                "address": "10.0.0.14",
                "port": 22,
                "weight": 1,
                "mac": "",
                "health": "static",
                "state": "active",
            }
        )
    ]
    assert len(backend.applied) == 1
    assert [v.name for v in backend.config.vips] == ["web", "api", "ssh"]
    assert dump_config(old) == old_data  # the live model was not mutated in place
    assert call(app, "GET", "/v1/vips/ssh").json == response.json


def test_replace_vip(app, backend: FakeBackend) -> None:
    members = [{"address": "10.0.0.14", "port": 80}]
    body = {"address": "10.0.0.100", "port": 8000, "idle_timeout": 30, "members": members}
    response = call(app, "PUT", "/v1/vips/web", body)
    assert response.status_int == 200, response.text
    assert len(backend.applied) == 1
    web = vip_of(backend, "web")
    assert response.json == answered_vip(web)
    assert (web["port"], web["idle_timeout"]) == (8000, 30)
    assert [m["name"] for m in web["members"]] == ["10.0.0.14:80"]
    assert [v.name for v in backend.config.vips] == ["web", "api"]


def test_replace_vip_with_matching_name(app, backend: FakeBackend) -> None:
    body = {"name": "api", "address": "10.0.0.101", "port": 443}
    assert call(app, "PUT", "/v1/vips/api", body).status_int == 200
    assert vip_of(backend, "api")["members"] == []


def test_replace_vip_name_mismatch(app, backend: FakeBackend) -> None:
    response = call(app, "PUT", "/v1/vips/api", {"name": "other", "address": "10.0.0.101", "port": 443})
    assert_error(response, 400, "invalid", "name")
    assert backend.applied == []


def test_replace_vip_duplicate_members_in_body_is_invalid(app, backend: FakeBackend) -> None:
    members = [{"address": "10.0.0.14", "port": 80}, {"address": "10.0.0.14", "port": 80}]
    response = call(app, "PUT", "/v1/vips/api", {"address": "10.0.0.101", "port": 443, "members": members})
    assert_error(response, 400, "invalid", "vips[api]", "duplicate member")
    assert backend.applied == []


def test_replace_vip_service_conflict(app, backend: FakeBackend) -> None:
    response = call(app, "PUT", "/v1/vips/api", {"address": "10.0.0.100", "port": 80})
    assert_error(response, 409, "conflict", "'web'", "10.0.0.100:80/tcp")
    assert backend.applied == []


def test_delete_vip(app, backend: FakeBackend) -> None:
    response = call(app, "DELETE", "/v1/vips/web")
    assert response.status_int == 204
    assert response.body == b""
    assert len(backend.applied) == 1
    assert [v.name for v in backend.config.vips] == ["api"]
    assert_error(call(app, "GET", "/v1/vips/web"), 404, "not_found", "'web'")


# --- member changes -----------------------------------------------------------------------------------------------


def test_create_member(app, backend: FakeBackend) -> None:
    response = call(app, "POST", "/v1/vips/web/members", {"name": "b3", "address": "10.0.0.13", "port": 8080})
    assert response.status_int == 201, response.text
    assert response.location == "http://localhost/v1/vips/web/members/b3"
    assert response.json == answered_member(
        {
            "name": "b3",
            "address": "10.0.0.13",
            "port": 8080,
            "weight": 1,
            "mac": "",
            "health": "static",
            "state": "active",
        }
    )
    assert len(backend.applied) == 1
    assert [m["name"] for m in vip_of(backend, "web")["members"]] == ["b1", "10.0.0.12:8080", "b3"]
    assert vip_of(backend, "api") == next(v for v in dump_config(parse_config(BASE))["vips"] if v["name"] == "api")


def test_create_member_default_name_location(app) -> None:
    response = call(app, "POST", "/v1/vips/api/members", {"address": "10.0.0.14", "port": 8443, "weight": 3})
    assert response.status_int == 201
    assert response.location == "http://localhost/v1/vips/api/members/10.0.0.14:8443"


@pytest.mark.parametrize("ident", ["10.0.0.12:8080", "b1"])
def test_update_member_changes_only_weight(app, backend: FakeBackend, ident: str) -> None:
    before = dump_config(backend.config)
    response = call(app, "PUT", f"/v1/vips/web/members/{ident}", {"weight": 7})
    assert response.status_int == 200, response.text
    assert response.json["weight"] == 7
    assert len(backend.applied) == 1
    after = dump_config(backend.config)
    position = 1 if ident == "10.0.0.12:8080" else 0
    assert after["vips"][0]["members"][position]["weight"] == 7
    after["vips"][0]["members"][position]["weight"] = before["vips"][0]["members"][position]["weight"]
    assert after == before
    assert response.json == answered_member({**before["vips"][0]["members"][position], "weight": 7})


@pytest.mark.parametrize("body, key", [({"weight": 3, "port": 9090}, "port"), ({"address": "10.0.0.11"}, "address")])
def test_update_member_other_keys(app, backend: FakeBackend, body: dict, key: str) -> None:
    assert_error(call(app, "PUT", "/v1/vips/web/members/b1", body), 400, "invalid", f"{key}: ")
    assert backend.applied == []


def test_update_member_needs_weight(app, backend: FakeBackend) -> None:
    assert_error(call(app, "PUT", "/v1/vips/web/members/b1", {}), 400, "invalid", "weight")
    assert backend.applied == []


@pytest.mark.parametrize("weight", [-1, 10001, "heavy"])
def test_update_member_bad_weight(app, backend: FakeBackend, weight: Any) -> None:
    response = call(app, "PUT", "/v1/vips/web/members/b1", {"weight": weight})
    assert_error(response, 400, "invalid", "vips[web].members[b1].weight")
    assert backend.applied == []


@pytest.mark.parametrize("ident", ["b1", "10.0.0.11:8080"])
def test_delete_member(app, backend: FakeBackend, ident: str) -> None:
    response = call(app, "DELETE", f"/v1/vips/web/members/{ident}")
    assert response.status_int == 204
    assert len(backend.applied) == 1
    assert [m["name"] for m in vip_of(backend, "web")["members"]] == ["10.0.0.12:8080"]


# --- errors -------------------------------------------------------------------------------------------------------


GOOD_VIP = {"name": "ssh", "address": "10.0.0.102", "port": 22}


@pytest.mark.parametrize(
    "method, path",
    [
        ("POST", "/v1/vips"),
        ("PUT", "/v1/vips/web"),
        ("POST", "/v1/vips/web/members"),
        ("PUT", "/v1/vips/web/members/b1"),
    ],
)
@pytest.mark.parametrize("raw", [b"{not json", b"", b"\xff\xfe\xfa"])
def test_malformed_json(app, backend: FakeBackend, method: str, path: str, raw: bytes) -> None:
    assert_error(call(app, method, path, raw=raw), 400, "bad_json", "malformed JSON")
    assert backend.applied == []


@pytest.mark.parametrize("body", [[GOOD_VIP], "ssh", 3, None])
def test_body_not_an_object(app, backend: FakeBackend, body: Any) -> None:
    assert_error(call(app, "POST", "/v1/vips", raw=json.dumps(body).encode()), 400, "invalid", "JSON object")
    assert backend.applied == []


@pytest.mark.parametrize(
    "method, path, body, key",
    [
        ("POST", "/v1/vips", {**GOOD_VIP, "bogus": 1}, "vips[ssh].bogus: unknown key"),
        ("POST", "/v1/vips/web/members", {"address": "10.0.0.14", "port": 80, "bogus": 1}, "members[2].bogus"),
        ("PUT", "/v1/vips/web", {"address": "10.0.0.100", "port": 80, "bogus": 1}, "vips[web].bogus: unknown key"),
    ],
)
def test_unknown_field(app, backend: FakeBackend, method: str, path: str, body: dict, key: str) -> None:
    response = call(app, method, path, body)
    assert_error(response, 400, "invalid", key, "unknown key")
    assert backend.applied == []


@pytest.mark.parametrize(
    "path, body, key",
    [
        ("/v1/vips", {**GOOD_VIP, "address": "10.0.0.300"}, "vips[ssh].address"),
        ("/v1/vips", {**GOOD_VIP, "address": "web.example"}, "vips[ssh].address"),
        ("/v1/vips/web/members", {"address": "10.0.0", "port": 80}, ".address"),
    ],
)
def test_bad_ip(app, backend: FakeBackend, path: str, body: dict, key: str) -> None:
    assert_error(call(app, "POST", path, body), 400, "invalid", key, "not an IPv4 address")
    assert backend.applied == []


@pytest.mark.parametrize("port", [0, 70000])
@pytest.mark.parametrize(
    "path, body, key",
    [
        ("/v1/vips", GOOD_VIP, "vips[ssh].port"),
        ("/v1/vips/web/members", {"address": "10.0.0.14"}, "vips[web].members[2].port"),
    ],
)
def test_bad_port(app, backend: FakeBackend, port: int, path: str, body: dict, key: str) -> None:
    assert_error(call(app, "POST", path, {**body, "port": port}), 400, "invalid", key)
    assert backend.applied == []


def test_member_outside_the_fabric_is_invalid(app, backend: FakeBackend) -> None:
    response = call(app, "POST", "/v1/vips/web/members", {"address": "10.0.0.50", "port": 80})
    assert_error(response, 400, "invalid", "not a host of the fabric")
    assert backend.applied == []
    body = {"address": "10.0.0.50", "port": 80, "mac": "02:00:00:00:00:50"}
    response = call(app, "POST", "/v1/vips/web/members", body)
    assert response.status_int == 201


def test_vip_on_a_host_address_is_invalid(app, backend: FakeBackend) -> None:
    response = call(app, "POST", "/v1/vips", {**GOOD_VIP, "address": "10.0.0.1"})
    assert_error(response, 400, "invalid", "also a host address")
    assert backend.applied == []


@pytest.mark.parametrize(
    "body, detail",
    [
        ({"name": "web", "address": "10.0.0.102", "port": 22}, "name: vip 'web'"),
        ({"name": "web2", "address": "10.0.0.100", "port": 80}, "10.0.0.100:80/tcp"),
    ],
)
def test_duplicate_vip(app, backend: FakeBackend, body: dict, detail: str) -> None:
    assert_error(call(app, "POST", "/v1/vips", body), 409, "conflict", detail)
    assert backend.applied == []


def test_same_address_other_port_is_no_conflict(app) -> None:
    assert call(app, "POST", "/v1/vips", {"name": "web2", "address": "10.0.0.100", "port": 81}).status_int == 201


@pytest.mark.parametrize(
    "body, detail",
    [
        ({"name": "b1", "address": "10.0.0.14", "port": 80}, "name: vip 'web' already has a member 'b1'"),
        ({"name": "b9", "address": "10.0.0.11", "port": 8080}, "10.0.0.11:8080 as member 'b1'"),
        ({"address": "10.0.0.12", "port": 8080}, "'10.0.0.12:8080'"),
    ],
)
def test_duplicate_member(app, backend: FakeBackend, body: dict, detail: str) -> None:
    assert_error(call(app, "POST", "/v1/vips/web/members", body), 409, "conflict", detail)
    assert backend.applied == []


def test_same_endpoint_in_another_pool_is_no_conflict(app) -> None:
    assert call(app, "POST", "/v1/vips/api/members", {"address": "10.0.0.11", "port": 8080}).status_int == 201


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("GET", "/v1/vips/nope", None),
        ("PUT", "/v1/vips/nope", {"address": "10.0.0.102", "port": 22}),
        ("DELETE", "/v1/vips/nope", None),
        ("GET", "/v1/vips/nope/members", None),
        ("POST", "/v1/vips/nope/members", {"address": "10.0.0.14", "port": 80}),
        ("GET", "/v1/vips/nope/members/b1", None),
        ("PUT", "/v1/vips/nope/members/b1", {"weight": 1}),
        ("DELETE", "/v1/vips/nope/members/b1", None),
    ],
)
def test_unknown_vip(app, backend: FakeBackend, method: str, path: str, body: Any) -> None:
    assert_error(call(app, method, path, body), 404, "not_found", "vip 'nope'")
    assert backend.applied == []


@pytest.mark.parametrize("method, body", [("GET", None), ("PUT", {"weight": 1}), ("DELETE", None)])
@pytest.mark.parametrize("ident", ["b7", "10.0.0.11:80", "10.0.0.13:8443"])
def test_unknown_member(app, backend: FakeBackend, method: str, body: Any, ident: str) -> None:
    assert_error(call(app, method, f"/v1/vips/web/members/{ident}", body), 404, "not_found", repr(ident))
    assert backend.applied == []


@pytest.mark.parametrize(
    "method, path, allow",
    [
        ("DELETE", "/v1/vips", "GET, POST"),
        ("POST", "/v1/vips/web", "GET, PUT, PATCH, DELETE"),
        ("PUT", "/v1/vips/web/members", "GET, POST"),
        ("POST", "/v1/vips/web/members/b1", "GET, PUT, PATCH, DELETE"),
        ("POST", "/v1/connections", "GET"),
        ("DELETE", "/v1/stats", "GET"),
        ("PUT", "/v1/config", "GET"),
    ],
)
def test_wrong_method(app, backend: FakeBackend, method: str, path: str, allow: str) -> None:
    response = call(app, method, path)
    assert_error(response, 405, "method_not_allowed", method)
    assert response.headers["Allow"] == allow
    assert backend.applied == []


@pytest.mark.parametrize("path", ["/", "/v1", "/v2/vips", "/v1/vips/web/members/b1/extra", "/v1/vips/", "/v1/statsx"])
def test_unknown_path(app, path: str) -> None:
    assert_error(call(app, "GET", path), 404, "not_found", path)


def test_body_too_large(app, backend: FakeBackend) -> None:
    raw = b'{"name": "' + b"x" * MAX_BODY + b'"}'
    assert_error(call(app, "POST", "/v1/vips", raw=raw), 413, "too_large")
    assert backend.applied == []


def test_body_at_the_limit_is_read(app) -> None:
    raw = b"[" + b" " * (MAX_BODY - 2) + b"]"
    assert_error(call(app, "POST", "/v1/vips", raw=raw), 400, "invalid", "JSON object")


def test_chunked_body(app, backend: FakeBackend) -> None:
    def chunked(raw: bytes):
        request = Request.blank("/v1/vips", method="POST", content_type="application/json")
        request.environ.pop("CONTENT_LENGTH", None)
        request.environ["HTTP_TRANSFER_ENCODING"] = "chunked"
        request.environ["wsgi.input"] = io.BytesIO(raw)
        return request.get_response(app)

    assert_error(chunked(b" " * (MAX_BODY + 1)), 413, "too_large")
    assert chunked(json.dumps(GOOD_VIP).encode()).status_int == 201
    assert len(backend.applied) == 1


# --- apply_config failures and crashes ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reason, status, code",
    [("flow table full", 400, "invalid"), ("duplicate vip name 'ssh'", 409, "conflict")],
)
def test_apply_config_error(app, backend: FakeBackend, reason: str, status: int, code: str) -> None:
    old = backend.config
    backend.fail = ConfigError("REST", "vips[ssh]", reason)
    assert_error(call(app, "POST", "/v1/vips", GOOD_VIP), status, code, f"vips[ssh]: {reason}")
    assert len(backend.applied) == 1
    assert backend.config is old


def test_internal_error_does_not_kill_the_app(app, backend: FakeBackend) -> None:
    backend.fail = RuntimeError("switch s1 went away")
    assert_error(call(app, "DELETE", "/v1/vips/web"), 500, "internal", "switch s1 went away")
    backend.fail = None
    assert call(app, "GET", "/v1/vips/web").status_int == 200
    assert call(app, "DELETE", "/v1/vips/web").status_int == 204


def test_unserialisable_stats_is_internal(backend: FakeBackend) -> None:
    backend.stats = lambda: {"when": object()}  # type: ignore[method-assign]
    assert_error(call(make_app(backend), "GET", "/v1/stats"), 500, "internal", "not JSON serializable")


# --- the eventlet server ------------------------------------------------------------------------------------------


def test_serve_over_http(backend: FakeBackend) -> None:
    import eventlet  # after nlb_sdn.rest, which silences eventlet's import-time deprecation warning
    from eventlet.green.http import client as green_http

    port = free_port()
    server = eventlet.spawn(serve, make_app(backend), "127.0.0.1", port)
    try:
        with eventlet.Timeout(10):
            eventlet.sleep(0)  # let the server green thread bind and start accepting
            connection = green_http.HTTPConnection("127.0.0.1", port, timeout=5)
            try:
                connection.request("GET", "/v1/vips/web")
                response = connection.getresponse()
                body = json.loads(response.read())
                connection.request(
                    "POST", "/v1/vips", body=json.dumps(GOOD_VIP), headers={"Content-Type": "application/json"}
                )
                created = connection.getresponse()
                created.read()
            finally:
                connection.close()
    finally:
        server.kill()
    assert response.status == 200
    assert response.getheader("Content-Type") == "application/json"
    assert body == answer_of(backend, "web")
    assert created.status == 201
    assert created.getheader("Location") == f"http://127.0.0.1:{port}/v1/vips/ssh"
    assert len(backend.applied) == 1


def test_listen_fails_fast_when_the_port_is_taken() -> None:
    first = listen("127.0.0.1", 0)
    try:
        port = first.getsockname()[1]
        with pytest.raises(OSError, match=f"REST API cannot listen on 127.0.0.1:{port}") as caught:
            listen("127.0.0.1", port)
        assert caught.value.errno == errno.EADDRINUSE
    finally:
        first.close()
