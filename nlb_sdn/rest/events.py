"""The REST side of the event log: ``GET /v1/events`` and the record of every REST edit (who, what, before, after)."""

from __future__ import annotations

import math
import time
from typing import Any

from webob import Request

from nlb_sdn.config import Config, dump_config
from nlb_sdn.config.rest import RestToken
from nlb_sdn.events import EventKind, EventLog
from nlb_sdn.rest.errors import HttpError
from nlb_sdn.rest.views import MAX_PAGE

UNRECORDED_PATHS = ("/v1/migrations",)
"""Paths whose writes are not operator edits (a router's migration commits and reports): not in the event log."""
ANONYMOUS = "anonymous"
"""Who made an edit when the API has no tokens."""


def _number(request: Request, name: str) -> float | None:
    """A finite number query parameter, or None when absent (400 otherwise)."""
    text = request.GET.get(name)
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        raise HttpError(400, "invalid", f"{name}: not a number") from None
    if not math.isfinite(value) or value < 0:
        raise HttpError(400, "invalid", f"{name}: must be a finite number >= 0")
    return value


def events_page(request: Request, events: EventLog) -> dict[str, Any]:
    """``GET /v1/events?kind=&vip=&since=&limit=&marker=``: events oldest first, filtered, one page at a time.

    ``since`` is a UNIX time; ``marker`` the id of the last event already read (``next_marker`` of the last page).
    """
    for key in request.GET:
        if key not in ("kind", "vip", "since", "limit", "marker"):
            raise HttpError(400, "invalid", f"{key}: unknown query parameter")
    text = request.GET.get("kind") or None
    if text is not None and text not in EventKind.__members__.values():
        raise HttpError(400, "invalid", f"kind: {text!r} is not one of {', '.join(EventKind)}")
    limit = _number(request, "limit")
    if limit is not None and not (limit.is_integer() and 1 <= limit <= MAX_PAGE):
        raise HttpError(400, "invalid", f"limit: must be a whole number 1..{MAX_PAGE}")
    marker = _number(request, "marker")
    if marker is not None and not marker.is_integer():
        raise HttpError(400, "invalid", "marker: must be an event id")
    page = int(limit) if limit is not None else MAX_PAGE
    found = events.select(
        kind=EventKind(text) if text else None,
        vip=request.GET.get("vip") or None,
        since=_number(request, "since"),
        marker=int(marker) if marker is not None else None,
        limit=page + 1,
    )
    more = len(found) > page
    found = found[:page]
    return {
        "events": [event.as_dict() for event in found],
        "count": len(found),
        "next_marker": found[-1].id if more else None,
    }


def changed_vips(before: Config, after: Config) -> tuple[dict[str, Any], dict[str, Any]]:
    """The VIPs an edit changed, as plain data by name: (before, after); an added or removed VIP is None on one side."""
    old = {vip["name"]: vip for vip in dump_config(before)["vips"]}
    new = {vip["name"]: vip for vip in dump_config(after)["vips"]}
    names = [name for name in {**old, **new} if old.get(name) != new.get(name)]
    return {name: old.get(name) for name in names}, {name: new.get(name) for name in names}


def record_edit(
    events: EventLog, request: Request, token: RestToken | None, status: int, before: Config, after: Config
) -> None:
    """Record a successful REST write in the event log: who (token name), what (method and path), the changed VIPs
    before and after; writes to ``UNRECORDED_PATHS`` and failed ones are not recorded."""
    path = request.path_info
    if status >= 400 or request.method in ("GET", "HEAD") or path.startswith(UNRECORDED_PATHS):
        return
    old, new = changed_vips(before, after)
    vips = sorted(set(old) | set(new))
    events.record(
        EventKind.REST_EDIT,
        time.time(),
        vips[0] if len(vips) == 1 else None,
        who=token.name if token is not None else ANONYMOUS,
        remote=request.remote_addr,
        what=f"{request.method} {path}",
        status=status,
        before=old,
        after=new,
    )
