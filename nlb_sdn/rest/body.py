"""Reading a request body strictly: ``application/json`` only, UTF-8 only, at most MAX_BODY bytes, one JSON object
without duplicate keys or non-JSON constants (NaN, Infinity)."""

from __future__ import annotations

import json
from typing import Any, NoReturn

from webob import Request

from nlb_sdn.rest.errors import HttpError

MAX_BODY = 1 << 20
"""Largest accepted request body in bytes (1 MiB); larger bodies get 413."""

JSON_TYPE = "application/json"


def _check_content_type(request: Request, accepted: tuple[str, ...] = (JSON_TYPE,)) -> None:
    """415 unless the body is declared ``application/json`` or another of ``accepted`` (charset, if given, utf-8).

    A browser sends a cross-origin POST without asking first only as text/plain, form or multipart data, so this
    also refuses requests forged by any web page."""
    if request.content_type not in accepted:
        declared = request.content_type or "none"
        expected = " or ".join(accepted)
        raise HttpError(415, "unsupported_media_type", f"Content-Type: expected {expected}, got {declared}")
    charset = request.headers.get("Content-Type", "").partition("charset=")[2].split(";")[0].strip().strip('"')
    if charset and charset.lower() not in ("utf-8", "utf8"):
        raise HttpError(415, "unsupported_media_type", f"Content-Type: charset {charset!r}: only utf-8 is accepted")


def _read_raw(request: Request) -> bytes:
    """The raw body; 413 when over MAX_BODY, 400 when the client sends a broken one (e.g. a bad chunk size)."""
    length = request.content_length
    if length is not None and length > MAX_BODY:
        raise HttpError(413, "too_large", f"body of {length} bytes exceeds the limit of {MAX_BODY} bytes")
    try:
        if length is None and request.headers.get("Transfer-Encoding", "").lower() == "chunked":
            raw: bytes = request.body_file_raw.read(MAX_BODY + 1)
            if len(raw) > MAX_BODY:
                raise HttpError(413, "too_large", f"body exceeds the limit of {MAX_BODY} bytes")
            return raw
        return bytes(request.body)
    except (ValueError, OSError) as exc:
        raise HttpError(400, "bad_body", f"(body): cannot read the body: {exc}") from None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's members as a dict; ValueError on a key given twice."""
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"duplicate key {key!r}")
        obj[key] = value
    return obj


def _no_constant(name: str) -> NoReturn:
    """Refuse NaN and Infinity, which Python's json reads but JSON does not have."""
    raise ValueError(f"{name} is not JSON")


def read_json_object(request: Request, accepted: tuple[str, ...] = (JSON_TYPE,)) -> dict[str, Any]:
    """The request body as a JSON object: 415 (not one of the ``accepted`` types), 413 (size), 400 (not UTF-8, not
    JSON, not an object)."""
    _check_content_type(request, accepted)
    raw = _read_raw(request)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        detail = f"(body): malformed JSON: not UTF-8 ({exc.reason} at byte {exc.start})"
        raise HttpError(400, "bad_json", detail) from None
    try:
        body = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise HttpError(400, "bad_json", f"(body): malformed JSON: {exc}") from None
    if not isinstance(body, dict):
        raise HttpError(400, "invalid", f"(body): expected a JSON object, got {type(body).__name__}")
    return body
