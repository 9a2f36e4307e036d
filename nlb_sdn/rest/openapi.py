"""The OpenAPI 3.1 document of the REST API (``GET /v1/openapi.json``), built from pydantic models.

Request bodies are the config models (``Vip``, ``Member``) and ``MigrationRequest``; answers are the models of
:mod:`nlb_sdn.rest.schema`. :data:`OPERATIONS` lists every method and path the app serves; a unit test checks it
against the routes of ``RestApp``.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from enum import IntEnum
from functools import cache
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from nlb_sdn.config import Member, Vip
from nlb_sdn.core.l7 import RECENT_MIGRATIONS, MigrationRequest
from nlb_sdn.dam.atoms import session_key
from nlb_sdn.events import EventKind
from nlb_sdn.rest import schema
from nlb_sdn.rest.forwarders import NewForwarder
from nlb_sdn.rest.status import MERGE_PATCH_TYPE
from nlb_sdn.rest.views import MAX_PAGE, VERSIONED_PATHS

OPENAPI_VERSION = "3.1.0"
API_VERSION = "1"
REF = "#/components/schemas/{model}"
JSON = "application/json"
TEXT_PLAIN = "text/plain"
HTML = "text/html"
UI_MEDIA_TYPES = (HTML, "text/javascript", "text/css")
"""The content types of the dashboard's files."""
Refs = Mapping[tuple[Any, JsonSchemaMode], dict[str, Any]]
"""JSON Schema references by (model, validation or serialization)."""
MAX_DAM_PAGE = 1000
"""Largest ``limit`` (``count``) of one ``/v1/dam`` page."""


class Status(IntEnum):
    """The error statuses the API answers with, each with the JSON error body."""

    BAD_REQUEST = 400
    UNAUTHORIZED = 401
    FORBIDDEN = 403
    NOT_FOUND = 404
    CONFLICT = 409
    PRECONDITION_FAILED = 412
    TOO_LARGE = 413
    UNSUPPORTED_MEDIA_TYPE = 415
    INTERNAL = 500
    UNAVAILABLE = 503
    TIMEOUT = 504


ERROR_MEANING = {
    Status.BAD_REQUEST: "A bad body, query parameter, path or value; `detail` names the key.",
    Status.UNAUTHORIZED: "No bearer token, or an unknown one (only when `controller.rest.tokens` is set).",
    Status.FORBIDDEN: "A `reader` token on a change.",
    Status.NOT_FOUND: "No such VIP, member, session or resource.",
    Status.CONFLICT: "The name or address is already used, or the change conflicts with the current state.",
    Status.TOO_LARGE: "The body is larger than 1 MiB.",
    Status.UNSUPPORTED_MEDIA_TYPE: "The body is not declared `application/json` (utf-8).",
    Status.INTERNAL: "A fault of the controller, logged with its traceback.",
    Status.PRECONDITION_FAILED: "`If-Match` names another version of the operator state: another change won the race.",
    Status.UNAVAILABLE: "The connection's switch is not connected, or the operator state could not be stored.",
    Status.TIMEOUT: "The switch did not confirm the flow change in time.",
}


class Param(NamedTuple):
    """A query parameter: its name, JSON Schema and meaning."""

    name: str
    schema: dict[str, Any]
    description: str


class Operation(NamedTuple):
    """One method on one path: what it takes and what it answers."""

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
    path: str
    summary: str
    answer: tuple[type[BaseModel], int] | None = None
    body: str | None = None
    query: tuple[Param, ...] = ()
    extra_errors: tuple[Status, ...] = ()
    text: bool = False
    """The answer is plain text (the Prometheus exposition), not JSON."""
    media_types: tuple[str, ...] = ()
    """The answer's content types when it is neither JSON nor plain text (the dashboard's files)."""
    public: bool = False
    """Served without a token even when tokens are set (the dashboard's files, which hold no data)."""


TEXT = {"type": "string"}
LIMIT = Param("limit", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}, "At most this many items.")
MARKER = Param("marker", TEXT, "Only the items after this one (the previous page's `next_marker`).")
PAGE = (LIMIT, MARKER)
VIP_FILTER = Param("vip", TEXT, "Only those of this VIP (empty: any).")

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "GET",
        "/v1/vips",
        "Every VIP with its members",
        (schema.VipList, 200),
        query=(*PAGE, Param("mode", {"enum": list(schema.VIP_MODES)}, "Only VIPs of this mode.")),
    ),
    Operation("POST", "/v1/vips", "Add a VIP", (schema.VipAnswer, 201), body="Vip"),
    Operation("GET", "/v1/vips/{vip}", "One VIP", (schema.VipAnswer, 200)),
    Operation(
        "PUT",
        "/v1/vips/{vip}",
        "Replace a VIP (a name in the body must equal the path's)",
        (schema.VipAnswer, 200),
        "VipPut",
    ),
    Operation(
        "PATCH",
        "/v1/vips/{vip}",
        "Change part of a VIP (JSON merge patch); what the patch leaves out, members too, stays",
        (schema.VipAnswer, 200),
        "VipPatch",
    ),
    Operation(
        "GET",
        "/v1/vips/{vip}/status",
        "The status tree: the VIP's and its members' provisioning and operating status",
        (schema.StatusTree, 200),
    ),
    Operation("DELETE", "/v1/vips/{vip}", "Remove a VIP"),
    Operation(
        "GET",
        "/v1/vips/{vip}/members",
        "The VIP's members",
        (schema.MemberList, 200),
        query=(*PAGE, Param("state", {"enum": list(schema.MEMBER_STATES)}, "Only members in this state.")),
    ),
    Operation("POST", "/v1/vips/{vip}/members", "Add a member", (schema.MemberAnswer, 201), body="Member"),
    Operation("GET", "/v1/vips/{vip}/members/{member}", "One member (by name or ip:port)", (Member, 200)),
    Operation(
        "PUT", "/v1/vips/{vip}/members/{member}", "Change a member's weight", (schema.MemberAnswer, 200), "WeightChange"
    ),
    Operation(
        "PATCH",
        "/v1/vips/{vip}/members/{member}",
        "Change part of a member (JSON merge patch)",
        (schema.MemberAnswer, 200),
        "MemberPatch",
    ),
    Operation("DELETE", "/v1/vips/{vip}/members/{member}", "Remove a member"),
    Operation("GET", "/v1/vips/{vip}/members/{member}/state", "A member's state", (schema.MemberStateView, 200)),
    Operation(
        "PUT",
        "/v1/vips/{vip}/members/{member}/state",
        "Set a member's target state",
        (schema.MemberStateView, 200),
        "StateChange",
    ),
    Operation("GET", "/v1/vips/{vip}/allotment", "The VIP's FIG. 18 allotment", (schema.AllotmentView, 200)),
    Operation("GET", "/v1/hl/cache", "The consolidated H&L cache", (schema.HlCacheView, 200)),
    Operation(
        "GET",
        "/v1/sessions",
        "The session table",
        (schema.SessionList, 200),
        query=(VIP_FILTER, Param("endpoint", TEXT, "Only those of this member (name or ip:port)."), *PAGE),
    ),
    Operation("DELETE", "/v1/sessions/{session}", "Forget a session here and in the DAM"),
    Operation(
        "GET",
        "/v1/dam",
        "DAM atoms of a kind, a page at a time",
        (schema.DamPage, 200),
        query=(
            Param("kind", {"enum": ["route", "session"], "default": "route"}, "Which atoms."),
            Param("limit", {"type": "integer", "minimum": 1, "maximum": MAX_DAM_PAGE}, "At most this many (100)."),
            Param("marker", TEXT, "The previous page's `next_marker`."),
            Param("count", {"type": "integer", "minimum": 1, "maximum": MAX_DAM_PAGE}, "Older name of `limit`."),
            Param("cursor", TEXT, "Older name of `marker`."),
        ),
    ),
    Operation(
        "GET",
        "/v1/connections",
        "Tracked connections",
        (schema.ConnectionList, 200),
        query=(VIP_FILTER, Param("member", TEXT, "Only those of this member (name or ip:port)."), *PAGE),
    ),
    Operation(
        "GET",
        "/v1/migrations",
        "Recent migrations of l7 connections and their counters",
        (schema.MigrationList, 200),
        query=(
            Param("limit", {"type": "integer", "minimum": 1, "maximum": RECENT_MIGRATIONS}, "At most this many."),
            Param("marker", TEXT, "Only the migrations after the one with this id (oldest first)."),
        ),
    ),
    Operation(
        "POST",
        "/v1/migrations",
        "A router's commit or report",
        (schema.MigrationResult, 200),
        "MigrationRequest",
        extra_errors=(Status.NOT_FOUND, Status.UNAVAILABLE, Status.TIMEOUT),
    ),
    Operation("GET", "/v1/stats", "The controller's counters", (schema.Stats, 200)),
    Operation("GET", "/v1/config", "The whole config, secrets redacted", (schema.ConfigView, 200)),
    Operation(
        "POST",
        "/v1/config/reload",
        "Re-read the config file and apply it (SIGHUP does the same); an invalid file changes nothing",
        (schema.ConfigReloadView, 200),
        query=(
            Param(
                "vips",
                {"enum": ["store", "file"], "default": "store"},
                "Keep the stored VIPs (store), or store the file's VIPs as the next version (file).",
            ),
        ),
        extra_errors=(Status.TOO_LARGE, Status.UNSUPPORTED_MEDIA_TYPE),
    ),
    Operation("GET", "/v1/openapi.json", "This document", (schema.OpenApiView, 200)),
    Operation(
        "GET",
        "/v1/events",
        "The event log: health and state changes, REST edits, switches, refusals",
        (schema.EventList, 200),
        query=(
            Param("kind", {"enum": [str(kind) for kind in EventKind]}, "Only events of this kind."),
            Param("vip", TEXT, "Only events of this VIP."),
            Param("since", {"type": "number", "minimum": 0}, "Only events at or after this UNIX time."),
            LIMIT,
            Param("marker", {"type": "integer", "minimum": 0}, "Only events after this id (`next_marker`)."),
        ),
    ),
    Operation(
        "GET",
        "/metrics",
        "Prometheus metrics (text exposition format)",
        (schema.MetricsText, 200),
        extra_errors=(Status.NOT_FOUND,),
        text=True,
    ),
    Operation(
        "GET", "/v1/fabric", "The fabric as a graph: switches, links, hosts, the master", (schema.FabricView, 200)
    ),
    Operation("GET", "/v1/forwarders", "Every forwarder with its links", (schema.ForwarderList, 200), query=PAGE),
    Operation(
        "POST",
        "/v1/forwarders",
        "Add a forwarder (a fabric switch and its links) at runtime",
        (schema.ForwarderView, 201),
        "NewForwarder",
        extra_errors=(Status.CONFLICT,),
    ),
    Operation("GET", "/v1/forwarders/{forwarder}", "One forwarder (by name or dpid)", (schema.ForwarderView, 200)),
    Operation(
        "DELETE",
        "/v1/forwarders/{forwarder}",
        "Remove a forwarder and its links (refused while hosts are attached)",
        extra_errors=(Status.CONFLICT,),
    ),
    Operation(
        "GET", "/ui/", "The dashboard (docs/dashboard.md)", (schema.UiFile, 200), media_types=(HTML,), public=True
    ),
    Operation(
        "GET", "/ui/{file}", "A file of the dashboard", (schema.UiFile, 200), media_types=UI_MEDIA_TYPES, public=True
    ),
)

DERIVED_BODIES = ("VipPut", "VipPatch", "MemberPatch")
"""Bodies whose schema is a config model's with fewer required keys (components of their own)."""

PATH_EXAMPLES = {
    "file": "app.js",
    "forwarder": "s1",
    "vip": "web",
    "member": "h1",
    "session": session_key("client_ip", "web@10.0.0.1"),
}
"""An example of each path parameter."""

BODIES: dict[str, tuple[type[BaseModel], str]] = {
    "Vip": (Vip, "A VIP, as in the config file."),
    "VipPut": (Vip, "A whole VIP; `name` may be left out."),
    "VipPatch": (Vip, "A JSON merge patch (RFC 7396) of the VIP: keys to change, null to reset one to its default."),
    "MemberPatch": (Member, "A JSON merge patch (RFC 7396) of the member: keys to change, null to reset one."),
    "Member": (Member, "A member, as in the config file."),
    "WeightChange": (schema.WeightChange, "Only `weight`."),
    "StateChange": (schema.StateChange, "Only `state`."),
    "MigrationRequest": (MigrationRequest, "A commit (`member` required) or a report (`outcome` required)."),
    "NewForwarder": (NewForwarder, "A switch (name, dpid) and its links to switches of the fabric."),
}


def path_template(pattern: str) -> str:
    """The OpenAPI path of a route's regex: ``/v1/vips/(?P<vip>[^/]+)`` -> ``/v1/vips/{vip}``."""
    return re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", pattern.removesuffix(r"\Z"))


def _error_statuses(operation: Operation) -> list[Status]:
    """The errors an operation may answer with."""
    statuses = [Status.BAD_REQUEST, Status.UNAUTHORIZED]
    changes = operation.method != "GET"
    if changes:
        statuses.append(Status.FORBIDDEN)
    if "{" in operation.path or any(p.name in ("vip", "member", "endpoint") for p in operation.query):
        statuses.append(Status.NOT_FOUND)
    if (changes and operation.path.startswith("/v1/vips")) or operation.body == "MigrationRequest":
        statuses.append(Status.CONFLICT)
    if operation.body is not None:
        statuses += [Status.TOO_LARGE, Status.UNSUPPORTED_MEDIA_TYPE]
    if changes and _versioned(operation):
        statuses += [Status.PRECONDITION_FAILED, Status.UNAVAILABLE]
    return [*statuses, Status.INTERNAL, *(s for s in operation.extra_errors if s not in statuses)]


def _versioned(operation: Operation) -> bool:
    """Whether the operation reads or changes the operator state (``ETag`` and ``If-Match``)."""
    return operation.path.startswith(VERSIONED_PATHS)


def _responses(operation: Operation, refs: Refs) -> dict[str, Any]:
    """The operation's responses: its answer (204 without one) and its errors."""
    responses: dict[str, Any] = {}
    if operation.answer is None:
        responses["204"] = {"description": "Done; no body."}
    else:
        model, status = operation.answer
        content = {JSON: {"schema": refs[model, "serialization"]}}
        if operation.text or operation.media_types:
            content = {media: {"schema": TEXT} for media in operation.media_types or (TEXT_PLAIN,)}
        answer: dict[str, Any] = {
            "description": model.__doc__ or "",
            "content": content,
        }
        headers = {}
        if status == 201:
            headers["Location"] = {"description": "The created resource's path.", "schema": TEXT}
        if _versioned(operation):
            headers["ETag"] = {"description": "The operator state's version, quoted (for `If-Match`).", "schema": TEXT}
        if headers:
            answer["headers"] = headers
        responses[str(status)] = answer
    error = {JSON: {"schema": refs[schema.ErrorBody, "serialization"]}}
    for status in _error_statuses(operation):
        responses[str(int(status))] = {"description": ERROR_MEANING[status], "content": error}
    return responses


def _parameters(operation: Operation) -> list[dict[str, Any]]:
    """The operation's path and query parameters."""
    path = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "string", "minLength": 1},
            "example": PATH_EXAMPLES[name],
        }
        for name in re.findall(r"\{(\w+)\}", operation.path)
    ]
    query = [
        {"name": p.name, "in": "query", "required": False, "schema": p.schema, "description": p.description}
        for p in operation.query
    ]
    if operation.method != "GET" and _versioned(operation):
        query.append(
            {
                "name": "If-Match",
                "in": "header",
                "required": False,
                "schema": TEXT,
                "description": "Change only if the operator state is still this version (an `ETag`); else 412.",
            }
        )
    return path + query


def _operation(operation: Operation, refs: Refs) -> dict[str, Any]:
    """One operation object."""
    document: dict[str, Any] = {
        "operationId": f"{operation.method.lower()}{re.sub(r'[^A-Za-z0-9]+', '_', operation.path)}",
        "summary": operation.summary,
        "parameters": _parameters(operation),
        "responses": _responses(operation, refs),
    }
    if operation.public:
        document["security"] = []
    if operation.body is not None:
        model, description = BODIES[operation.body]
        derived = operation.body in DERIVED_BODIES
        ref = {"$ref": REF.format(model=operation.body)} if derived else refs[model, "validation"]
        content = {
            media: {"schema": ref} for media in ((JSON, MERGE_PATCH_TYPE) if operation.method == "PATCH" else (JSON,))
        }
        document["requestBody"] = {"required": True, "description": description, "content": content}
    return document


def _schemas() -> tuple[Refs, dict[str, Any]]:
    """JSON Schema refs of every model, and the component schemas they point to."""
    answers = {op.answer[0] for op in OPERATIONS if op.answer is not None} | {schema.ErrorBody}
    inputs: list[tuple[type[BaseModel], JsonSchemaMode]] = [(model, "validation") for model, _ in BODIES.values()]
    outputs: list[tuple[type[BaseModel], JsonSchemaMode]] = [(model, "serialization") for model in answers]
    refs, definitions = models_json_schema(list(dict.fromkeys(inputs + outputs)), ref_template=REF)
    components: dict[str, Any] = definitions.get("$defs", {})
    vip_input = refs[Vip, "validation"]["$ref"].rpartition("/")[2]
    put = copy.deepcopy(components[vip_input])
    put["required"] = [key for key in put.get("required", []) if key != "name"]
    components["VipPut"] = put
    for name, model in (("VipPatch", Vip), ("MemberPatch", Member)):
        component = refs[model, "validation"]["$ref"].rpartition("/")[2]
        patch = copy.deepcopy(components[component])
        patch.pop("required", None)
        components[name] = patch
    return refs, components


@cache
def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the API (built once)."""
    refs, components = _schemas()
    paths: dict[str, dict[str, Any]] = {}
    for operation in OPERATIONS:
        paths.setdefault(operation.path, {})[operation.method.lower()] = _operation(operation, refs)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "nlb_sdn controller REST API",
            "version": API_VERSION,
            "description": "Lists answer `{<items>: [...], count, next_marker}` (docs/rest.md). With "
            "`controller.rest.tokens` set, every request needs a bearer token (`reader` for GET, `admin` for "
            "changes); without tokens the loopback API is open.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}, {}],
    }
