"""The REST API: a thin WSGI app on webob over a :class:`RestBackend`, JSON in and out.

Every change reads the live model as plain data (``dump_config``), edits the data, validates the result with
``parse_config(data, source="REST")`` (the same schema as the config file) and hands the new model to
``backend.apply_config``; the live model is never mutated in place.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel
from webob import Request, Response

from nlb_sdn.config import Config, ConfigError, Member, Vip, dump_config, parse_config, validate_model
from nlb_sdn.core.l7 import RECENT_MIGRATIONS, MigrationRequest
from nlb_sdn.rest.auth import authorize
from nlb_sdn.rest.body import (
    MAX_BODY as MAX_BODY,  # re-exported: the public name of the limit
    read_json_object,
)
from nlb_sdn.rest.errors import HttpError
from nlb_sdn.rest.views import page_of, redacted_config

LOG = logging.getLogger(__name__)

SOURCE = "REST"
MAX_CURSOR = 512
"""Longest accepted ``/v1/dam`` cursor."""

_M = TypeVar("_M", bound=BaseModel)


class RestBackend(Protocol):
    """What the REST API needs from the controller."""

    def current_config(self) -> Config:
        """The live model."""
        ...

    def apply_config(self, new: Config) -> None:
        """Apply a validated new model (the flow diff); may raise ConfigError."""
        ...

    def connections(self, vip: str | None = None, member: str | None = None) -> list[dict]:
        """Tracked connections, optionally only those of a VIP and/or a member (by name)."""
        ...

    def stats(self) -> dict:
        """Counters, returned to clients as they are."""
        ...

    def member_state(self, vip: str, member: str) -> dict:
        """Target and current load-balancing state of one member (by name)."""
        ...

    def allotment(self, vip: str) -> dict:
        """The VIP service's current allotment (FIG. 18)."""
        ...

    def hl_cache(self) -> dict:
        """The consolidated H&L cache: every host's rows, liveness and checksum."""
        ...

    def sessions(self, vip: str | None = None, member: str | None = None) -> list[dict]:
        """Session table rows (FIG. 23A), optionally of one VIP and/or endpoint member."""
        ...

    def delete_session(self, session_id: str) -> bool:
        """Forget a session here and in the DAM; False when there is no such session."""
        ...

    def dam_page(self, kind: str, cursor: str | None, count: int) -> dict:
        """One page of DAM atoms (FIG. 23B rows: key, data, metadata) of a kind, and the next cursor."""
        ...

    def migrations(self, limit: int | None = None) -> dict:
        """Recent migrations of l7 connections (newest last) and their counters."""
        ...

    def migrate(self, request: MigrationRequest) -> tuple[dict, bool]:
        """A router's commit or report: the migration, and whether the switch confirmed the flow change."""
        ...

    def migration_ticket(self, request: MigrationRequest) -> dict[str, str]:
        """A router's ticket request: the signed ticket and the migration's channel key (hex)."""
        ...


def json_response(payload: Any, status: int = 200, location: str | None = None) -> Response:
    """A JSON response with the given status and optional Location header."""
    response = Response(status=status, content_type="application/json")
    response.body = json.dumps(payload).encode() + b"\n"
    if location is not None:
        response.location = location
    return response


def error_response(error: HttpError) -> Response:
    """The JSON error body ``{"error": code, "detail": reason}`` with the error's status and headers."""
    response = json_response({"error": error.code, "detail": error.detail}, status=error.status)
    response.headers.update(error.headers.items())
    return response


def _invalid(exc: ConfigError) -> HttpError:
    """A 400 ``invalid`` naming the ConfigError's key and reason."""
    return HttpError(400, "invalid", f"{exc.key}: {exc.reason}")


def _valid_or_none(model: type[_M], body: dict[str, Any]) -> _M | None:
    """``body`` validated as ``model`` on its own, or None (parse_config then reports the error with its full key)."""
    try:
        return validate_model(model, body, SOURCE)
    except ConfigError:
        return None


def _connection_marker(connection: dict[str, Any]) -> str:
    """A tracked connection's place in a paged listing: its VIP and client."""
    return f"{connection['vip']}/{connection['client']}"


def _session_marker(session: dict[str, Any]) -> str:
    """A session's place in a paged listing: its id (the DAM key)."""
    return str(session["id"])


def _raw_path(request: Request) -> str:
    """The path as the client sent it (still percent-encoded), safe to log whatever it holds."""
    return str(request.environ.get("RAW_PATH_INFO") or request.environ.get("PATH_INFO", ""))


def _known_params(request: Request, allowed: tuple[str, ...]) -> None:
    """Refuse (400) a query parameter the endpoint does not know."""
    for key in request.GET:
        if key not in allowed:
            raise HttpError(400, "invalid", f"{key}: unknown query parameter")


def _vip_index(config: Config, name: str) -> int:
    """Position of the VIP called ``name``; 404 if there is none."""
    for index, vip in enumerate(config.vips):
        if vip.name == name:
            return index
    raise HttpError(404, "not_found", f"vip {name!r} does not exist")


def _lookup_member(vip: Vip, ident: str) -> int | None:
    """Position of the member of ``vip`` called ``ident`` or, failing that, addressed ``ip:port``."""
    for index, member in enumerate(vip.members):
        if member.name == ident:
            return index
    for index, member in enumerate(vip.members):
        if f"{member.address}:{member.port}" == ident:
            return index
    return None


def _member_index(vip: Vip, ident: str) -> int:
    """Position of the member ``ident`` (name or ``ip:port``) of ``vip``; 404 if there is none."""
    index = _lookup_member(vip, ident)
    if index is None:
        raise HttpError(404, "not_found", f"vip {vip.name!r} has no member {ident!r}")
    return index


def _vip_conflict(config: Config, candidate: Vip, replacing: str | None = None) -> None:
    """409 if ``candidate`` has the name or the (address, port, protocol) of a VIP other than ``replacing``."""
    for vip in config.vips:
        if vip.name == replacing:
            continue
        if vip.name == candidate.name:
            raise HttpError(409, "conflict", f"name: vip {candidate.name!r} already exists")
        if (vip.address, vip.port, vip.protocol) == (candidate.address, candidate.port, candidate.protocol):
            service = f"{candidate.address}:{candidate.port}/{candidate.protocol}"
            raise HttpError(409, "conflict", f"address: vip {vip.name!r} already serves {service}")


def _member_conflict(vip: Vip, candidate: Member) -> None:
    """409 if ``candidate`` has the name or the (address, port) of a member of ``vip``."""
    for member in vip.members:
        if member.name == candidate.name:
            raise HttpError(409, "conflict", f"name: vip {vip.name!r} already has a member {candidate.name!r}")
        if (member.address, member.port) == (candidate.address, candidate.port):
            raise HttpError(
                409,
                "conflict",
                f"address: vip {vip.name!r} already has {candidate.address}:{candidate.port} as member {member.name!r}",
            )


class RestApp:
    """The WSGI application; one instance per backend."""

    def __init__(self, backend: RestBackend) -> None:
        self.backend = backend
        vip = r"/v1/vips/(?P<vip>[^/]+)"
        routes: list[tuple[str, dict[str, Callable[..., Response]]]] = [
            (r"/v1/vips", {"GET": self.list_vips, "POST": self.create_vip}),
            (vip, {"GET": self.get_vip, "PUT": self.replace_vip, "DELETE": self.delete_vip}),
            (vip + r"/members", {"GET": self.list_members, "POST": self.create_member}),
            (
                vip + r"/members/(?P<member>[^/]+)",
                {"GET": self.get_member, "PUT": self.update_member, "DELETE": self.delete_member},
            ),
            (vip + r"/members/(?P<member>[^/]+)/state", {"GET": self.get_member_state, "PUT": self.set_member_state}),
            (vip + r"/allotment", {"GET": self.get_allotment}),
            (r"/v1/hl/cache", {"GET": self.get_hl_cache}),
            (r"/v1/sessions", {"GET": self.get_sessions}),
            (r"/v1/sessions/(?P<session>.+)", {"DELETE": self.delete_session}),
            (r"/v1/dam", {"GET": self.get_dam}),
            (r"/v1/connections", {"GET": self.get_connections}),
            (r"/v1/migrations", {"GET": self.get_migrations, "POST": self.post_migration}),
            (r"/v1/stats", {"GET": self.get_stats}),
            (r"/v1/config", {"GET": self.get_config}),
        ]
        self.routes = [(re.compile(pattern + r"\Z"), methods) for pattern, methods in routes]

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        """WSGI entry point."""
        return self.handle(Request(environ))(environ, start_response)

    def handle(self, request: Request) -> Response:
        """Authorize and route ``request`` and turn every failure into a JSON error response; never raises.

        A client's mistake is a 4xx; every 5xx is logged with its traceback."""
        try:
            return self._dispatch(request)
        except HttpError as error:
            if error.status >= 500:
                LOG.error("REST %s %r: %s", request.method, _raw_path(request), error, exc_info=True)
            return error_response(error)
        except Exception as exc:  # the server must survive any handler failure
            LOG.exception("REST %s %r failed", request.method, _raw_path(request))
            return error_response(HttpError(500, "internal", str(exc) or type(exc).__name__))

    def _dispatch(self, request: Request) -> Response:
        """Check the caller's token, then find the route for the path and method and call its handler."""
        settings = self.backend.current_config().controller.rest
        token = authorize(settings, request.method, request.headers.get("Authorization"))
        try:
            path = request.path_info
            request.GET  # noqa: B018 - decoded here so that a bad query is a 400, not a failure in a handler
        except UnicodeDecodeError:
            raise HttpError(400, "bad_path", f"{_raw_path(request)}: the path or query is not UTF-8") from None
        if token is not None and request.method not in ("GET", "HEAD"):
            LOG.info("REST %s %s by token %r", request.method, path, token.name)
        for pattern, methods in self.routes:
            match = pattern.match(path)
            if match is None:
                continue
            handler = methods.get(request.method)
            if handler is None:
                allow = ", ".join(methods)
                raise HttpError(
                    405, "method_not_allowed", f"{request.method} {path}: allowed {allow}", headers={"Allow": allow}
                )
            return handler(request, **match.groupdict())
        raise HttpError(404, "not_found", f"no such resource: {path}")

    def _apply(self, data: dict[str, Any]) -> Config:
        """Validate edited plain data into a new model and apply it; ConfigError becomes 400 (409 for duplicates)."""
        try:
            new = parse_config(data, source=SOURCE)
        except ConfigError as exc:
            raise _invalid(exc) from None
        try:
            self.backend.apply_config(new)
        except ConfigError as exc:
            if exc.reason.startswith("duplicate"):
                raise HttpError(409, "conflict", f"{exc.key}: {exc.reason}") from None
            raise _invalid(exc) from None
        return new

    # --- VIPs -------------------------------------------------------------------------------------------------

    def list_vips(self, request: Request) -> Response:
        """GET /v1/vips: every VIP with its members."""
        return json_response(dump_config(self.backend.current_config())["vips"])

    def create_vip(self, request: Request) -> Response:
        """POST /v1/vips: add a VIP; 201 with the created VIP and its Location."""
        body = read_json_object(request)
        config = self.backend.current_config()
        candidate = _valid_or_none(Vip, body)
        if candidate is not None:
            _vip_conflict(config, candidate)
        data = dump_config(config)
        data["vips"].append(body)
        created = self._apply(data).vips[-1]
        return json_response(created.model_dump(mode="json"), status=201, location=f"/v1/vips/{created.name}")

    def get_vip(self, request: Request, vip: str) -> Response:
        """GET /v1/vips/{vip}."""
        config = self.backend.current_config()
        return json_response(config.vips[_vip_index(config, vip)].model_dump(mode="json"))

    def replace_vip(self, request: Request, vip: str) -> Response:
        """PUT /v1/vips/{vip}: replace the whole VIP; a name in the body must equal the one in the path."""
        body = read_json_object(request)
        config = self.backend.current_config()
        index = _vip_index(config, vip)
        if body.setdefault("name", vip) != vip:
            raise HttpError(400, "invalid", f"name: {body['name']!r} differs from the vip {vip!r} in the path")
        candidate = _valid_or_none(Vip, body)
        if candidate is not None:
            _vip_conflict(config, candidate, replacing=vip)
        data = dump_config(config)
        data["vips"][index] = body
        return json_response(self._apply(data).vips[index].model_dump(mode="json"))

    def delete_vip(self, request: Request, vip: str) -> Response:
        """DELETE /v1/vips/{vip}: 204."""
        config = self.backend.current_config()
        index = _vip_index(config, vip)
        data = dump_config(config)
        del data["vips"][index]
        self._apply(data)
        return Response(status=204)

    # --- members ----------------------------------------------------------------------------------------------

    def list_members(self, request: Request, vip: str) -> Response:
        """GET /v1/vips/{vip}/members."""
        config = self.backend.current_config()
        service = config.vips[_vip_index(config, vip)]
        return json_response([member.model_dump(mode="json") for member in service.members])

    def create_member(self, request: Request, vip: str) -> Response:
        """POST /v1/vips/{vip}/members: add a member; 201 with the created member and its Location."""
        body = read_json_object(request)
        config = self.backend.current_config()
        index = _vip_index(config, vip)
        candidate = _valid_or_none(Member, body)
        if candidate is not None:
            _member_conflict(config.vips[index], candidate)
        data = dump_config(config)
        data["vips"][index]["members"].append(body)
        created = self._apply(data).vips[index].members[-1]
        location = f"/v1/vips/{vip}/members/{created.name}"
        return json_response(created.model_dump(mode="json"), status=201, location=location)

    def get_member(self, request: Request, vip: str, member: str) -> Response:
        """GET /v1/vips/{vip}/members/{member} (member by name or ``ip:port``)."""
        config = self.backend.current_config()
        service = config.vips[_vip_index(config, vip)]
        return json_response(service.members[_member_index(service, member)].model_dump(mode="json"))

    def update_member(self, request: Request, vip: str, member: str) -> Response:
        """PUT /v1/vips/{vip}/members/{member}: change the weight, and only the weight."""
        body = read_json_object(request)
        config = self.backend.current_config()
        index = _vip_index(config, vip)
        position = _member_index(config.vips[index], member)
        for key in body:
            if key != "weight":
                raise HttpError(400, "invalid", f"{key}: only weight may change here")
        if "weight" not in body:
            raise HttpError(400, "invalid", "weight: field required")
        data = dump_config(config)
        data["vips"][index]["members"][position]["weight"] = body["weight"]
        return json_response(self._apply(data).vips[index].members[position].model_dump(mode="json"))

    def delete_member(self, request: Request, vip: str, member: str) -> Response:
        """DELETE /v1/vips/{vip}/members/{member}: 204."""
        config = self.backend.current_config()
        index = _vip_index(config, vip)
        position = _member_index(config.vips[index], member)
        data = dump_config(config)
        del data["vips"][index]["members"][position]
        self._apply(data)
        return Response(status=204)

    def get_member_state(self, request: Request, vip: str, member: str) -> Response:
        """GET /v1/vips/{vip}/members/{member}/state: target and current load-balancing state."""
        config = self.backend.current_config()
        service = config.vips[_vip_index(config, vip)]
        name = service.members[_member_index(service, member)].name
        return json_response(self.backend.member_state(vip, name))

    def set_member_state(self, request: Request, vip: str, member: str) -> Response:
        """PUT /v1/vips/{vip}/members/{member}/state: set the target state (active, draining or inactive)."""
        body = read_json_object(request)
        config = self.backend.current_config()
        index = _vip_index(config, vip)
        position = _member_index(config.vips[index], member)
        for key in body:
            if key != "state":
                raise HttpError(400, "invalid", f"{key}: only state may change here")
        if "state" not in body:
            raise HttpError(400, "invalid", "state: field required (active, draining or inactive)")
        data = dump_config(config)
        data["vips"][index]["members"][position]["state"] = body["state"]
        name = self._apply(data).vips[index].members[position].name
        return json_response(self.backend.member_state(vip, name))

    def get_allotment(self, request: Request, vip: str) -> Response:
        """GET /v1/vips/{vip}/allotment: endpoints with percentages or tokens, and the duration timer."""
        config = self.backend.current_config()
        _vip_index(config, vip)
        return json_response(self.backend.allotment(vip))

    def get_hl_cache(self, request: Request) -> Response:
        """GET /v1/hl/cache: the consolidated H&L cache."""
        return json_response(self.backend.hl_cache())

    def get_sessions(self, request: Request) -> Response:
        """GET /v1/sessions?vip=&endpoint=: the session table; ``endpoint`` is a member name or ``ip:port``."""
        _known_params(request, ("vip", "endpoint", "limit", "marker"))
        vip = request.GET.get("vip") or None
        endpoint = request.GET.get("endpoint") or None
        config = self.backend.current_config()
        if vip is not None:
            _vip_index(config, vip)
        if endpoint is not None:
            pools = config.vips if vip is None else [config.vips[_vip_index(config, vip)]]
            names = [pool.members[i].name for pool in pools if (i := _lookup_member(pool, endpoint)) is not None]
            if not names:
                raise HttpError(404, "not_found", f"endpoint: no member {endpoint!r}")
            endpoint = names[0]
        return json_response(page_of(request, "sessions", self.backend.sessions(vip, endpoint), _session_marker))

    def delete_session(self, request: Request, session: str) -> Response:
        """DELETE /v1/sessions/{id}: 204; the id is the session's DAM key, e.g. ``sess:client_ip:web@10.0.0.1``."""
        if not self.backend.delete_session(session):
            raise HttpError(404, "not_found", f"no session {session!r}")
        return Response(status=204)

    def get_dam(self, request: Request) -> Response:
        """GET /v1/dam?kind=route|session&cursor=&count=: atoms, one page at a time."""
        _known_params(request, ("kind", "cursor", "count"))
        kind = request.GET.get("kind", "route")
        if kind not in ("route", "session"):
            raise HttpError(400, "invalid", f"kind: {kind!r} is not route or session")
        try:
            count = int(request.GET.get("count", "100"))
        except ValueError:
            raise HttpError(400, "invalid", "count: not a whole number") from None
        if not 1 <= count <= 1000:
            raise HttpError(400, "invalid", "count: must be 1..1000")
        cursor = request.GET.get("cursor") or None
        if cursor is not None and (len(cursor) > MAX_CURSOR or not cursor.isprintable()):
            raise HttpError(400, "invalid", f"cursor: not a cursor of this listing (at most {MAX_CURSOR} characters)")
        try:
            return json_response(self.backend.dam_page(kind, cursor, count))
        except ValueError as exc:
            raise HttpError(400, "invalid", f"cursor: not a cursor of this listing: {exc}") from None

    # --- l7 migrations ---------------------------------------------------------------------------------------

    def get_migrations(self, request: Request) -> Response:
        """GET /v1/migrations?limit=: recent migrations of l7 connections (newest last) and their counters."""
        _known_params(request, ("limit",))
        text = request.GET.get("limit") or ""
        if text and not (text.isdigit() and 1 <= int(text) <= RECENT_MIGRATIONS):
            raise HttpError(400, "invalid", f"limit: must be 1..{RECENT_MIGRATIONS}")
        return json_response(self.backend.migrations(int(text) if text else None))

    def post_migration(self, request: Request) -> Response:
        """POST /v1/migrations: a router's ticket request, commit (answered once the switch confirmed the move) or
        outcome report."""
        try:
            body = validate_model(MigrationRequest, read_json_object(request), SOURCE)
        except ConfigError as exc:
            raise _invalid(exc) from None
        _vip_index(self.backend.current_config(), body.vip)
        try:
            if body.phase == "ticket":
                return json_response({"ticket": self.backend.migration_ticket(body)})
            migration, confirmed = self.backend.migrate(body)
        except LookupError as exc:
            raise HttpError(404, "not_found", str(exc)) from None
        except ConnectionError as exc:
            raise HttpError(503, "unavailable", str(exc)) from None
        except ValueError as exc:
            raise HttpError(409, "conflict", str(exc)) from None
        if not confirmed:
            raise HttpError(504, "timeout", "the switch did not confirm the flow change in time")
        return json_response({"migration": migration, "confirmed": confirmed})

    # --- read-only views --------------------------------------------------------------------------------------

    def get_connections(self, request: Request) -> Response:
        """GET /v1/connections?vip=&member=: tracked connections; the member filter is passed on as its name."""
        _known_params(request, ("vip", "member", "limit", "marker"))
        vip = request.GET.get("vip") or None
        member = request.GET.get("member") or None
        config = self.backend.current_config()
        pools = config.vips if vip is None else [config.vips[_vip_index(config, vip)]]
        if member is not None:
            found = [(pool, position) for pool in pools if (position := _lookup_member(pool, member)) is not None]
            if not found:
                where = "any vip" if vip is None else f"vip {vip!r}"
                raise HttpError(404, "not_found", f"member: {where} has no member {member!r}")
            pool, position = found[0]
            member = pool.members[position].name
        connections = self.backend.connections(vip=vip, member=member)
        return json_response(page_of(request, "connections", connections, _connection_marker))

    def get_stats(self, request: Request) -> Response:
        """GET /v1/stats: the backend's counters as they are."""
        return json_response(self.backend.stats())

    def get_config(self, request: Request) -> Response:
        """GET /v1/config: the whole current model, secrets (the DAM URL's password, token hashes) redacted."""
        return json_response(redacted_config(self.backend.current_config()))


def make_app(backend: RestBackend) -> RestApp:
    """The REST API as a WSGI callable over ``backend``."""
    return RestApp(backend)
