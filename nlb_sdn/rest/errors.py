"""The REST API's error: an HTTP status, a short code and a detail naming the key, sent as a JSON body."""

from __future__ import annotations


class HttpError(Exception):
    """An error response: HTTP status, short code and a detail naming the key."""

    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}
