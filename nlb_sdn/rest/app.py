"""The REST API: a thin WSGI app on webob over a :class:`RestBackend`, JSON in and out.

Every change reads the live model as plain data (``dump_config``), edits the data, validates the result with
``parse_config(data, source="REST")`` (the same schema as the config file) and hands the new model to
``backend.apply_config``; the live model is never mutated in place.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel
from webob import Request, Response

from nlb_sdn.config import Config, ConfigError, Member, Vip, dump_config, parse_config, validate_model
from nlb_sdn.config.reload import VipsSource
from nlb_sdn.core.l7 import RECENT_MIGRATIONS, MigrationRequest
from nlb_sdn.events import EventLog
from nlb_sdn.rest.auth import authorize
from nlb_sdn.rest.body import (
    JSON_TYPE,
    MAX_BODY as MAX_BODY,  # re-exported: the public name of the limit
    read_json_object,
)
from nlb_sdn.rest.errors import HttpError
from nlb_sdn.rest.events import events_page, record_edit
from nlb_sdn.rest.fabric import fabric_view
from nlb_sdn.rest.forwarders import ForwarderRoutes
from nlb_sdn.rest.openapi import MAX_DAM_PAGE, openapi_document
from nlb_sdn.rest.reload import reload_refused, reload_source
from nlb_sdn.rest.schema import MEMBER_STATES, VIP_MODES
from nlb_sdn.rest.status import (
    MERGE_PATCH_TYPE,
    StatusViews,
    member_answer,
    merge_patch,
    status_tree,
    without_answer_keys,
)
from nlb_sdn.rest.ui import ui_response
from nlb_sdn.rest.views import (
    VERSIONED_PATHS,
    json_response,
    known_params as _known_params,
    migrations_after,
    one_of,
    page_of,
    redacted_config,
)
from nlb_sdn.store import StaleVersion, StateError

LOG = logging.getLogger(__name__)

SOURCE = "REST"
MAX_CURSOR = 512
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The Prometheus text exposition format of ``GET /metrics``."""
"""Longest accepted ``/v1/dam`` cursor."""

UI_PREFIX = "/ui/"
"""The dashboard's files: GETs under it need no token (the page asks for one and sends it to the API)."""

EXPECTED_VERSION = "nlb_sdn.expected_version"
"""The request's environ key of the version a change must replace (If-Match given), absent otherwise."""
NEW_VERSION = "nlb_sdn.new_version"
"""The request's environ key of the version its change was stored as."""

_M = TypeVar("_M", bound=BaseModel)


class RestBackend(Protocol):
    """What the REST API needs from the controller."""

    def current_config(self) -> Config:
        """The live model."""
        ...

    def config_version(self) -> int:
        """The stored version of the live model (the operator state), shown as ``ETag``."""
        ...

    def apply_config(self, new: Config, expected_version: int | None = None) -> int:
        """Store a validated new model, then apply it (the flow diff); its version. Raises StaleVersion when
        ``expected_version`` is given and not the stored one, StateError when the store fails, maybe ConfigError."""
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

    def reload_config(self, vips: VipsSource, expected_version: int | None = None) -> dict:
        """Re-read the config file and apply it; what changed (ConfigError, StaleVersion, StateError: nothing did)."""
        ...

    def migrate(self, request: MigrationRequest) -> tuple[dict, bool]:
        """A router's commit or report: the migration, and whether the switch confirmed the flow change."""
        ...

    def migration_ticket(self, request: MigrationRequest) -> dict[str, str]:
        """A router's ticket request: the signed ticket and the migration's channel key (hex)."""
        ...


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


def _name_marker(item: dict[str, Any]) -> str:
    """A VIP's or member's place in a paged listing: its name."""
    return str(item["name"])


def _session_marker(session: dict[str, Any]) -> str:
    """A session's place in a paged listing: its id (the DAM key)."""
    return str(session["id"])


def _raw_path(request: Request) -> str:
    """The path as the client sent it (still percent-encoded), safe to log whatever it holds."""
    return str(request.environ.get("RAW_PATH_INFO") or request.environ.get("PATH_INFO", ""))


def _etag_versions(header: str) -> set[str]:
    """The entity tags of an ``If-Match`` header without quotes and weakness marks (``*`` stays ``*``)."""
    return {tag.strip().removeprefix("W/").strip('"') for tag in header.split(",")}


def _precondition(request: Request, base: int) -> None:
    """412 unless ``If-Match`` (when given) names the state version ``base`` or is ``*``; record what a change
    must then replace."""
    header = request.headers.get("If-Match")
    if header is None:
        return
    tags = _etag_versions(header)
    if "*" in tags:
        return
    if str(base) not in tags:
        detail = f'If-Match: the operator state is at version {base} (ETag "{base}")'
        raise HttpError(412, "precondition_failed", detail, headers={"ETag": f'"{base}"'})
    request.environ[EXPECTED_VERSION] = base


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

    def __init__(
        self, backend: RestBackend, events: EventLog | None = None, metrics: Callable[[], bytes] | None = None
    ) -> None:
        self.backend = backend
        self.events = events if events is not None else EventLog()
        """The event log ``GET /v1/events`` serves and REST edits are recorded in."""
        self.metrics = metrics
        """What ``GET /metrics`` serves (the Prometheus text exposition); None: no such resource."""
        self.statuses = StatusViews(backend, self.events)
        """VIP and member answers with their statuses and warnings."""
        self.warned = self.statuses.warned
        """The configured mix each VIP last had, already recorded in the event log (once while it lasts)."""
        vip = r"/v1/vips/(?P<vip>[^/]+)"
        forwarders = ForwarderRoutes(backend, self._apply)
        routes: list[tuple[str, dict[str, Callable[..., Response]]]] = [
            (r"/v1/vips", {"GET": self.list_vips, "POST": self.create_vip}),
            (vip, {"GET": self.get_vip, "PUT": self.replace_vip, "PATCH": self.patch_vip, "DELETE": self.delete_vip}),
            (vip + r"/status", {"GET": self.get_vip_status}),
            (vip + r"/members", {"GET": self.list_members, "POST": self.create_member}),
            (
                vip + r"/members/(?P<member>[^/]+)",
                {
                    "GET": self.get_member,
                    "PUT": self.update_member,
                    "PATCH": self.patch_member,
                    "DELETE": self.delete_member,
                },
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
            (r"/v1/config/reload", {"POST": self.post_config_reload}),
            (r"/v1/events", {"GET": self.get_events}),
            (r"/metrics", {"GET": self.get_metrics}),
            (r"/v1/openapi.json", {"GET": self.get_openapi}),
            (r"/v1/fabric", {"GET": self.get_fabric}),
            (r"/v1/forwarders", {"GET": forwarders.list, "POST": forwarders.create}),
            (r"/v1/forwarders/(?P<forwarder>[^/]+)", {"GET": forwarders.get, "DELETE": forwarders.delete}),
            (r"/ui/", {"GET": self.get_ui}),
            (r"/ui/(?P<file>[^/]+)", {"GET": self.get_ui}),
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
        public = request.method == "GET" and str(request.environ.get("PATH_INFO", "")).startswith(UI_PREFIX)
        token = None if public else authorize(settings, request.method, request.headers.get("Authorization"))
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
            before = self.backend.current_config()
            if path.startswith(VERSIONED_PATHS):
                response: Response = self._versioned(request, handler, match.groupdict())
            else:
                response = handler(request, **match.groupdict())
            if request.method not in ("GET", "HEAD"):
                record_edit(self.events, request, token, response.status_code, before, self.backend.current_config())
            return response
        raise HttpError(404, "not_found", f"no such resource: {path}")

    def _versioned(self, request: Request, handler: Callable[..., Response], args: dict[str, Any]) -> Response:
        """Run a handler of the operator state: check ``If-Match`` first, answer with the version as ``ETag``."""
        base = self.backend.config_version()
        if request.method not in ("GET", "HEAD"):
            _precondition(request, base)
        response = handler(request, **args)
        response.headers["ETag"] = f'"{request.environ.get(NEW_VERSION, base)}"'
        return response

    def _apply(self, data: dict[str, Any], request: Request) -> Config:
        """Validate edited plain data into a new model, store and apply it; ConfigError becomes 400 (409 for
        duplicates), a lost compare-and-set 412, a failing store 503."""
        try:
            new = parse_config(data, source=SOURCE)
        except ConfigError as exc:
            raise _invalid(exc) from None
        try:
            request.environ[NEW_VERSION] = self.backend.apply_config(new, request.environ.get(EXPECTED_VERSION))
        except ConfigError as exc:
            if exc.reason.startswith("duplicate"):
                raise HttpError(409, "conflict", f"{exc.key}: {exc.reason}") from None
            raise _invalid(exc) from None
        except StaleVersion as exc:
            raise HttpError(412, "precondition_failed", f"If-Match: {exc}") from None
        except StateError as exc:
            raise HttpError(503, "unavailable", f"the operator state was not stored: {exc}") from None
        return new

    # --- VIPs -------------------------------------------------------------------------------------------------

    def list_vips(self, request: Request) -> Response:
        """GET /v1/vips?mode=&limit=&marker=: every VIP with its members, in the list envelope."""
        _known_params(request, ("mode", "limit", "marker"))
        mode = one_of(request, "mode", VIP_MODES)
        found = {vip.name: vip for vip in self.backend.current_config().vips if mode in (None, vip.mode)}
        page = page_of(request, "vips", [{"name": name} for name in found], _name_marker)
        page["vips"] = [self.statuses.vip_view(found[item["name"]]) for item in page["vips"]]
        return json_response(page)

    def create_vip(self, request: Request) -> Response:
        """POST /v1/vips: add a VIP; 201 with the created VIP and its Location."""
        body = without_answer_keys(read_json_object(request))
        config = self.backend.current_config()
        candidate = _valid_or_none(Vip, body)
        if candidate is not None:
            _vip_conflict(config, candidate)
        data = dump_config(config)
        data["vips"].append(body)
        created = self._apply(data, request).vips[-1]
        return json_response(self.statuses.vip_view(created), status=201, location=f"/v1/vips/{created.name}")

    def get_vip(self, request: Request, vip: str) -> Response:
        """GET /v1/vips/{vip}."""
        config = self.backend.current_config()
        found = config.vips[_vip_index(config, vip)]
        return json_response(self.statuses.vip_view(found))

    def replace_vip(self, request: Request, vip: str) -> Response:
        """PUT /v1/vips/{vip}: replace the whole VIP; a name in the body must equal the one in the path."""
        body = without_answer_keys(read_json_object(request))
        config = self.backend.current_config()
        index = _vip_index(config, vip)
        if body.setdefault("name", vip) != vip:
            raise HttpError(400, "invalid", f"name: {body['name']!r} differs from the vip {vip!r} in the path")
        candidate = _valid_or_none(Vip, body)
        if candidate is not None:
            _vip_conflict(config, candidate, replacing=vip)
        data = dump_config(config)
        data["vips"][index] = body
        replaced = self._apply(data, request).vips[index]
        return json_response(self.statuses.vip_view(replaced))

    def patch_vip(self, request: Request, vip: str) -> Response:
        """PATCH /v1/vips/{vip}: a JSON merge patch (RFC 7396) of the VIP; what it leaves out (members too) stays."""
        patch = without_answer_keys(read_json_object(request, (JSON_TYPE, MERGE_PATCH_TYPE)))
        config = self.backend.current_config()
        index = _vip_index(config, vip)
        data = dump_config(config)
        body = merge_patch(data["vips"][index], patch)
        if body.get("name", vip) != vip:
            raise HttpError(400, "invalid", f"name: {body['name']!r} differs from the vip {vip!r} in the path")
        body["name"] = vip
        candidate = _valid_or_none(Vip, body)
        if candidate is not None:
            _vip_conflict(config, candidate, replacing=vip)
        data["vips"][index] = body
        patched = self._apply(data, request).vips[index]
        return json_response(self.statuses.vip_view(patched))

    def get_vip_status(self, request: Request, vip: str) -> Response:
        """GET /v1/vips/{vip}/status: the status tree, the VIP's and its members' provisioning and operating status."""
        config = self.backend.current_config()
        found = config.vips[_vip_index(config, vip)]
        states = [self.backend.member_state(vip, member.name) for member in found.members]
        return json_response(status_tree(found, states, self.statuses.warnings(found, states)))

    def delete_vip(self, request: Request, vip: str) -> Response:
        """DELETE /v1/vips/{vip}: 204."""
        config = self.backend.current_config()
        index = _vip_index(config, vip)
        data = dump_config(config)
        del data["vips"][index]
        self._apply(data, request)
        return Response(status=204)

    # --- members ----------------------------------------------------------------------------------------------

    def list_members(self, request: Request, vip: str) -> Response:
        """GET /v1/vips/{vip}/members?state=&limit=&marker=: the VIP's members, in the list envelope."""
        _known_params(request, ("state", "limit", "marker"))
        state = one_of(request, "state", MEMBER_STATES)
        config = self.backend.current_config()
        service = config.vips[_vip_index(config, vip)]
        found = {member.name: member for member in service.members if state in (None, member.state)}
        page = page_of(request, "members", [{"name": name} for name in found], _name_marker)
        page["members"] = [
            member_answer(found[item["name"]], self.backend.member_state(vip, item["name"])) for item in page["members"]
        ]
        return json_response(page)

    def create_member(self, request: Request, vip: str) -> Response:
        """POST /v1/vips/{vip}/members: add a member; 201 with the created member and its Location."""
        body = without_answer_keys(read_json_object(request))
        config = self.backend.current_config()
        index = _vip_index(config, vip)
        candidate = _valid_or_none(Member, body)
        if candidate is not None:
            _member_conflict(config.vips[index], candidate)
        data = dump_config(config)
        data["vips"][index]["members"].append(body)
        changed = self._apply(data, request).vips[index]
        location = f"/v1/vips/{vip}/members/{changed.members[-1].name}"
        return json_response(
            self.statuses.member_view(changed, len(changed.members) - 1), status=201, location=location
        )

    def get_member(self, request: Request, vip: str, member: str) -> Response:
        """GET /v1/vips/{vip}/members/{member} (member by name or ``ip:port``)."""
        config = self.backend.current_config()
        service = config.vips[_vip_index(config, vip)]
        return json_response(self.statuses.member_view(service, _member_index(service, member)))

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
        changed = self._apply(data, request).vips[index]
        return json_response(self.statuses.member_view(changed, position))

    def patch_member(self, request: Request, vip: str, member: str) -> Response:
        """PATCH /v1/vips/{vip}/members/{member}: a JSON merge patch (RFC 7396) of the member."""
        patch = without_answer_keys(read_json_object(request, (JSON_TYPE, MERGE_PATCH_TYPE)))
        config = self.backend.current_config()
        index = _vip_index(config, vip)
        service = config.vips[index]
        position = _member_index(service, member)
        data = dump_config(config)
        body = merge_patch(data["vips"][index]["members"][position], patch)
        candidate = _valid_or_none(Member, body)
        if candidate is not None:
            others = [m for i, m in enumerate(service.members) if i != position]
            _member_conflict(service.model_copy(update={"members": others}), candidate)
        data["vips"][index]["members"][position] = body
        changed = self._apply(data, request).vips[index]
        return json_response(self.statuses.member_view(changed, position))

    def delete_member(self, request: Request, vip: str, member: str) -> Response:
        """DELETE /v1/vips/{vip}/members/{member}: 204."""
        config = self.backend.current_config()
        index = _vip_index(config, vip)
        position = _member_index(config.vips[index], member)
        data = dump_config(config)
        del data["vips"][index]["members"][position]
        self._apply(data, request)
        return Response(status=204)

    def get_member_state(self, request: Request, vip: str, member: str) -> Response:
        """GET /v1/vips/{vip}/members/{member}/state: target and current load-balancing state."""
        config = self.backend.current_config()
        service = config.vips[_vip_index(config, vip)]
        name = service.members[_member_index(service, member)].name
        return json_response(self.statuses.state_view(vip, name))

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
        name = self._apply(data, request).vips[index].members[position].name
        return json_response(self.statuses.state_view(vip, name))

    def get_allotment(self, request: Request, vip: str) -> Response:
        """GET /v1/vips/{vip}/allotment: endpoints with percentages or tokens, and the duration timer."""
        config = self.backend.current_config()
        found = config.vips[_vip_index(config, vip)]
        return json_response(self.statuses.warned_answer(self.backend.allotment(vip), found))

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
        """GET /v1/dam?kind=route|session&marker=&limit=: atoms, one page at a time (``cursor`` and ``count`` are
        the older names of ``marker`` and ``limit``)."""
        _known_params(request, ("kind", "cursor", "count", "marker", "limit"))
        kind = request.GET.get("kind", "route")
        if kind not in ("route", "session"):
            raise HttpError(400, "invalid", f"kind: {kind!r} is not route or session")
        try:
            count = int(request.GET.get("limit", request.GET.get("count", "100")))
        except ValueError:
            raise HttpError(400, "invalid", "limit: not a whole number") from None
        if not 1 <= count <= MAX_DAM_PAGE:
            raise HttpError(400, "invalid", f"limit: must be 1..{MAX_DAM_PAGE}")
        cursor = request.GET.get("marker") or request.GET.get("cursor") or None
        if cursor is not None and (len(cursor) > MAX_CURSOR or not cursor.isprintable()):
            raise HttpError(400, "invalid", f"cursor: not a cursor of this listing (at most {MAX_CURSOR} characters)")
        try:
            page = self.backend.dam_page(kind, cursor, count)
        except ValueError as exc:
            raise HttpError(400, "invalid", f"cursor: not a cursor of this listing: {exc}") from None
        return json_response({**page, "count": len(page["atoms"]), "next_marker": page.get("next_cursor")})

    # --- l7 migrations ---------------------------------------------------------------------------------------

    def get_migrations(self, request: Request) -> Response:
        """GET /v1/migrations?limit=&marker=: recent migrations of l7 connections (oldest first) and their counters;
        without ``marker`` the newest ``limit``, with it the first ``limit`` after the migration of that id."""
        _known_params(request, ("limit", "marker"))
        text = request.GET.get("limit") or ""
        if text and not (text.isascii() and text.isdigit() and 1 <= int(text) <= RECENT_MIGRATIONS):
            raise HttpError(400, "invalid", f"limit: must be 1..{RECENT_MIGRATIONS}")
        limit = int(text) if text else None
        marker = request.GET.get("marker")
        if marker is None:
            view = self.backend.migrations(limit)
            return json_response(view if limit is None else {**view, "next_marker": None})
        return json_response(migrations_after(self.backend.migrations(None), marker, limit))

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

    def post_config_reload(self, request: Request) -> Response:
        """POST /v1/config/reload?vips=store|file: re-read the config file and apply it; what changed."""
        try:
            view = self.backend.reload_config(reload_source(request), request.environ.get(EXPECTED_VERSION))
        except ConfigError as exc:
            raise reload_refused(exc) from None
        except StaleVersion as exc:
            raise HttpError(412, "precondition_failed", f"If-Match: {exc}") from None
        except StateError as exc:
            raise HttpError(503, "unavailable", f"the operator state was not stored: {exc}") from None
        request.environ[NEW_VERSION] = view["version"]
        return json_response(view)

    def get_events(self, request: Request) -> Response:
        """GET /v1/events?kind=&vip=&since=&limit=&marker=: the event log, oldest first, one page at a time."""
        return json_response(events_page(request, self.events))

    def get_openapi(self, request: Request) -> Response:
        """GET /v1/openapi.json: the OpenAPI 3.1 document of this API (any token may read it, as every GET)."""
        return json_response(openapi_document())

    def get_metrics(self, request: Request) -> Response:
        """GET /metrics: the controller's Prometheus metrics (text exposition format)."""
        if self.metrics is None:
            raise HttpError(404, "not_found", "no such resource: /metrics")
        response = Response(status=200, body=self.metrics())
        response.headers["Content-Type"] = METRICS_CONTENT_TYPE
        return response

    def get_fabric(self, request: Request) -> Response:
        """GET /v1/fabric: switches (connected or not, and their master), links and hosts with their members."""
        connected = self.backend.stats().get("switches", [])
        return json_response(fabric_view(self.backend.current_config(), connected))

    def get_ui(self, request: Request, file: str = "") -> Response:
        """GET /ui/ and /ui/{file}: the dashboard's static files, served without a token (they hold no data)."""
        return ui_response(file)


def make_app(
    backend: RestBackend, events: EventLog | None = None, metrics: Callable[[], bytes] | None = None
) -> RestApp:
    """The REST API as a WSGI callable over ``backend``, serving ``events`` and ``metrics`` when given."""
    return RestApp(backend, events, metrics)
