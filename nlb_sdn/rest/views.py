"""Shaping REST responses: pages of large lists (``limit``, ``marker``) and the config with its secrets redacted."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from webob import Request, Response

from nlb_sdn.config import Config, dump_config
from nlb_sdn.rest.errors import HttpError

MAX_PAGE = 10_000
"""Largest ``limit`` of one page."""

REDACTED = "(redacted)"

VERSIONED_PATHS = ("/v1/vips", "/v1/config", "/v1/forwarders")
"""Resources of the operator state: their responses carry its version as ``ETag``, their changes honour ``If-Match``."""


def json_response(payload: Any, status: int = 200, location: str | None = None) -> Response:
    """A JSON response with the given status and optional Location header."""
    response = Response(status=status, content_type="application/json")
    response.body = json.dumps(payload).encode() + b"\n"
    if location is not None:
        response.location = location
    return response


def known_params(request: Request, allowed: tuple[str, ...]) -> None:
    """Refuse (400) a query parameter the endpoint does not know."""
    for key in request.GET:
        if key not in allowed:
            raise HttpError(400, "invalid", f"{key}: unknown query parameter")


def _limit(request: Request) -> int | None:
    """The ``limit`` query parameter (1..MAX_PAGE), or None when absent."""
    text = request.GET.get("limit")
    if text is None:
        return None
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= MAX_PAGE):
        raise HttpError(400, "invalid", f"limit: must be a whole number 1..{MAX_PAGE}")
    return int(text)


def page_of(
    request: Request, name: str, items: list[dict[str, Any]], marker_of: Callable[[dict[str, Any]], str]
) -> dict[str, Any]:
    """``{name: items, "count": N}``; with ``limit`` or ``marker`` the items are ordered by their marker, only those
    after ``marker`` are given, at most ``limit``, and ``next_marker`` says where the next page starts (None at
    the end)."""
    limit = _limit(request)
    marker = request.GET.get("marker")
    if limit is None and marker is None:
        return {name: items, "count": len(items)}
    ordered = sorted(items, key=marker_of)
    if marker is not None:
        ordered = [item for item in ordered if marker_of(item) > marker]
    page = ordered if limit is None else ordered[:limit]
    more = len(page) < len(ordered)
    return {name: page, "count": len(page), "next_marker": marker_of(page[-1]) if more else None}


def one_of(request: Request, name: str, allowed: tuple[str, ...]) -> str | None:
    """The filter query parameter ``name`` (empty or absent: None); 400 unless it is one of ``allowed``."""
    value = request.GET.get(name) or None
    if value is not None and value not in allowed:
        raise HttpError(400, "invalid", f"{name}: {value!r} is not one of {', '.join(allowed)}")
    return value


def migrations_after(view: dict[str, Any], marker: str, limit: int | None) -> dict[str, Any]:
    """The migrations view cut to those after the migration ``marker`` (oldest first), at most ``limit``, with
    ``next_marker``; 400 when no recent migration has that id."""
    recent: list[dict[str, Any]] = view["migrations"]
    ids = [migration["id"] for migration in recent]
    if marker not in ids:
        raise HttpError(400, "invalid", f"marker: no recent migration {marker!r}")
    after = recent[len(ids) - ids[::-1].index(marker) :]
    page = after if limit is None else after[:limit]
    more = len(page) < len(after)
    return {**view, "migrations": page, "count": len(page), "next_marker": page[-1]["id"] if more else None}


def redact_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``(redacted)``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{REDACTED}@{host}"))


def redacted_config(config: Config) -> dict[str, Any]:
    """The config as plain data without secrets: the DAM's and the state store's URL passwords and the REST token
    hashes are redacted."""
    data = dump_config(config)
    controller = data["controller"]
    controller["dam"]["url"] = redact_url(controller["dam"]["url"])
    controller["state"]["url"] = redact_url(controller["state"]["url"])
    for token in controller["rest"]["tokens"]:
        token["sha256"] = REDACTED
    return data
