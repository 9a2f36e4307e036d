"""Properties of the REST API over a real LoadBalancer core: no request a client can send is answered with a 5xx.

A 5xx means the server failed; anything a client gets wrong (body, path, query, method) must be a 4xx naming it.
Requests go through the WSGI app (``make_app``) over a backend built the way ``apps/facade.py`` builds the
controller's, on the pure core and an in-memory DAM, with a fixed clock.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from hypothesis import example, given, strategies as st
from webob import Request, Response

from nlb_sdn.config import Config, Member, Vip, parse_config
from nlb_sdn.config.reload import VipsSource, read_reload
from nlb_sdn.core.l7 import MigrationRequest
from nlb_sdn.dam.atoms import ROUTE_PREFIX, SESSION_PREFIX, session_key
from nlb_sdn.dam.memory import MemoryDam
from nlb_sdn.rest import make_app
from tests.lib.configs import FABRIC, web_member
from tests.lib.core import punt_syns
from tests.lib.properties import PROPERTY, along, json_values
from tests.lib.shell_double import ShellDouble

NOW = 5.0
BASE = parse_config(
    {
        "vips": [
            {"name": "web", "address": "10.0.0.100", "port": 80, "members": [web_member(i) for i in (1, 2, 3)]},
            {
                "name": "front",
                "address": "10.0.0.110",
                "port": 80,
                "mode": "l7",
                "routers": ["c1"],
                "members": [web_member(1), web_member(2)],
            },
        ],
        "fabric": FABRIC,
    }
)


class CoreBackend:
    """The REST backend of the classifier app (``apps/facade.py``), over the pure core, a MemoryDam and NOW."""

    def __init__(self) -> None:
        self.lb = ShellDouble(BASE)
        self.dam = MemoryDam()
        punt_syns(self.lb, 4)

    def current_config(self) -> Config:
        return self.lb.config

    def config_version(self) -> int:
        return 1

    def apply_config(self, new: Config, expected_version: int | None = None) -> int:
        self.lb.apply_config(new, dpids=[1, 2, 3], now=NOW)
        return 1

    def reload_config(self, vips: VipsSource, expected_version: int | None = None) -> dict:
        """No config file: every reload answers 400 and changes nothing."""
        return read_reload("", self.lb.config, vips).view(1, vips)

    def connections(self, vip: str | None = None, member: str | None = None) -> list[dict]:
        return self.lb.connections(vip, member)

    def stats(self) -> dict:
        return self.lb.stats()

    def member_state(self, vip: str, member: str) -> dict:
        return self.lb.member_state(vip, member)

    def allotment(self, vip: str) -> dict:
        return self.lb.allotment(vip, now=NOW)

    def hl_cache(self) -> dict:
        return self.lb.health.cache.as_dict(NOW)

    def sessions(self, vip: str | None = None, member: str | None = None) -> list[dict]:
        return [session.as_dict(NOW) for session in self.lb.ctx.affinity.sessions.select(vip, member)]

    def delete_session(self, session_id: str) -> bool:
        return self.lb.delete_session(session_id)

    def dam_page(self, kind: str, cursor: str | None, count: int) -> dict:
        atoms, next_cursor = self.dam.scan(ROUTE_PREFIX if kind == "route" else SESSION_PREFIX, cursor, count, NOW)
        return {"kind": kind, "atoms": [atom.key for atom in atoms], "next_cursor": next_cursor}

    def migrations(self, limit: int | None = None) -> dict:
        return self.lb.migrations.view(limit)

    def migration_ticket(self, request: MigrationRequest) -> dict[str, str]:
        client_ip, client_port = request.client_address
        grant = self.lb.migration_ticket(
            request.id, request.vip, client_ip, client_port, request.member, NOW, "00" * 16
        )
        return grant.as_dict()

    def migrate(self, request: MigrationRequest) -> tuple[dict, bool]:
        client_ip, client_port = request.client_address
        if request.phase == "commit":
            _dpid, _msgs, migration = self.lb.commit_migration(
                request.id, request.vip, client_ip, client_port, request.member, NOW
            )
        else:
            _dpid, _msgs, migration = self.lb.report_migration(
                request.id,
                request.vip,
                client_ip,
                client_port,
                request.router,
                request.member,
                request.outcome or "",
                request.reason,
                request.duration_ms,
                NOW,
            )
        return migration.as_dict(), True


class _App:
    """One app over one backend shared by the examples, renewed every RENEW requests (changes pile up otherwise)."""

    RENEW = 50

    def __init__(self) -> None:
        self.calls = 0
        self.app = make_app(CoreBackend())

    def send(self, request: Request) -> Response:
        """The app's answer to ``request``, on a fresh app every RENEW calls."""
        self.calls += 1
        if self.calls % self.RENEW == 0:
            self.app = make_app(CoreBackend())
        return request.get_response(self.app)


APP = _App()
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
NAMES = [
    "web",
    "front",
    "nope",
    "h1",
    "h3",
    "10.0.0.11:80",
    "10.0.0.12:80",
    "c1",
    session_key("client_ip", "web@10.0.0.1"),
]
ROUTES = [
    "/v1/vips",
    "/v1/vips/{vip}",
    "/v1/vips/{vip}/members",
    "/v1/vips/{vip}/members/{member}",
    "/v1/vips/{vip}/members/{member}/state",
    "/v1/vips/{vip}/allotment",
    "/v1/hl/cache",
    "/v1/sessions",
    "/v1/sessions/{member}",
    "/v1/dam",
    "/v1/connections",
    "/v1/migrations",
    "/v1/stats",
    "/v1/config",
]
QUERY_KEYS = ["vip", "member", "endpoint", "kind", "cursor", "count", "limit", "x"]
QUERY_VALUES = st.sampled_from([*NAMES, "route", "session", "0", "1", "1000", "1001", "-1", "", "1e3"]) | st.text(
    max_size=8
)

migration_bodies = st.fixed_dictionaries(
    {
        "phase": st.sampled_from(["commit", "report"]),
        "id": st.sampled_from(["m1", "m-2"]) | st.text(max_size=8),
        "vip": st.sampled_from(NAMES),
        "client": st.sampled_from(["10.0.0.1:40000", "10.0.0.1:40001", "10.0.0.1:0", "x"]),
    },
    optional={
        "member": st.sampled_from(NAMES),
        "router": st.sampled_from(NAMES),
        "outcome": st.sampled_from(["handed_off", "proxied", "reset", "failed"]) | json_values,
        "reason": st.text(max_size=8),
        "duration_ms": st.integers(-1, 4_000_000) | st.floats(allow_nan=False),
    },
)
bodies = st.one_of(
    along(Vip),
    along(Member),
    migration_bodies,
    st.fixed_dictionaries({}, optional={"weight": json_values, "state": json_values}),
    json_values,
)


def route(template: str, vip: str, member: str) -> str:
    """A route template filled with path segments (quoted, as a client would send them)."""
    return template.format(vip=quote(vip, safe=":@"), member=quote(member, safe=":@"))


def send(method: str, path: str, query: list[tuple[str, str]], raw: bytes | None, content_type: str) -> Response:
    """One request to the shared app; ``path`` is sent as it is, ``raw`` as the body with ``content_type``."""
    request = Request.blank(path, method=method)
    if query:
        request.query_string = "&".join(f"{quote(k)}={quote(v)}" for k, v in query)
    if raw is not None:
        request.body = raw
        request.content_type = content_type
    return APP.send(request)


def _check(response: Response, what: str) -> None:
    """A client error must never be a server error; every answer is JSON (or empty)."""
    assert response.status_int < 500, f"{what} -> {response.status}: {response.text}"
    if response.body:
        json.loads(response.body)


@PROPERTY
@given(
    method=st.sampled_from(METHODS),
    template=st.sampled_from(ROUTES),
    vip=st.sampled_from(NAMES),
    member=st.sampled_from(NAMES),
    query=st.lists(st.tuples(st.sampled_from(QUERY_KEYS), QUERY_VALUES), max_size=3),
    body=st.none() | bodies,
    encoding=st.sampled_from(["utf-8", "utf-8", "utf-8", "utf-16", "latin-1"]),
    content_type=st.sampled_from(["application/json", "text/plain", ""]),
)
def test_json_bodies_on_every_route_never_get_a_server_error(
    method: str,
    template: str,
    vip: str,
    member: str,
    query: list[tuple[str, str]],
    body: Any,
    encoding: str,
    content_type: str,
) -> None:
    raw = None if body is None else json.dumps(body, ensure_ascii=False).encode(encoding, errors="replace")
    path = route(template, vip, member)
    _check(send(method, path, query, raw, content_type), f"{method} {path}?{query} {raw!r}")


@PROPERTY
@given(
    method=st.sampled_from(METHODS),
    template=st.sampled_from(ROUTES),
    vip=st.text(max_size=12) | st.sampled_from(NAMES),
    member=st.text(max_size=12) | st.sampled_from(NAMES),
    junk=st.sampled_from(["", "%ff", "%", "%2", "%00", "%2F", "%c3%28", "/", "//", "/..", "?", "#", "?cursor=%ff"]),
    raw=st.none() | st.binary(max_size=64),
)
@example(method="GET", template="/v1/vips/{vip}", vip="web", member="h1", junk="%ff", raw=None)
def test_arbitrary_paths_and_bytes_never_get_a_server_error(
    method: str, template: str, vip: str, member: str, junk: str, raw: bytes | None
) -> None:
    path = route(template, vip, member) + junk
    _check(send(method, path, [], raw, "application/json"), f"{method} {path} {raw!r}")
