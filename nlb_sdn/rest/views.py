"""Shaping REST responses: pages of large lists (``limit``, ``marker``) and the config with its secrets redacted."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from webob import Request

from nlb_sdn.config import Config, dump_config
from nlb_sdn.rest.errors import HttpError

MAX_PAGE = 10_000
"""Largest ``limit`` of one page."""

REDACTED = "(redacted)"


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
