"""The REST API without a server: one request through the WSGI app."""

from __future__ import annotations

import json
from typing import Any

from webob import Request, Response


def call(app: Any, method: str, path: str, body: Any = None, raw: bytes | None = None) -> Response:
    """Send one request through the WSGI ``app``; ``body`` is sent as JSON, ``raw`` as is (both as
    application/json)."""
    request = Request.blank(path, method=method)
    if body is not None:
        raw = json.dumps(body).encode()
    if raw is not None:
        request.body = raw
        request.content_type = "application/json"
    return request.get_response(app)
