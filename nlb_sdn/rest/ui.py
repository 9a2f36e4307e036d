"""The dashboard's static files (``nlb_sdn/ui/``), served at ``GET /ui/`` and ``GET /ui/{file}`` (docs/dashboard.md).

The files hold no data: every figure comes from the API, which the page calls with the operator's bearer token.
"""

from __future__ import annotations

from enum import Enum
from importlib import resources

from webob import Response

from nlb_sdn.rest.errors import HttpError

UI_PACKAGE = "nlb_sdn.ui"
INDEX = "index.html"


class UiFileKind(Enum):
    """The kinds of file the dashboard has, by suffix, with their content type."""

    HTML = ".html", "text/html; charset=utf-8"
    JAVASCRIPT = ".js", "text/javascript; charset=utf-8"
    CSS = ".css", "text/css; charset=utf-8"

    @property
    def suffix(self) -> str:
        """The file name's suffix."""
        return self.value[0]

    @property
    def content_type(self) -> str:
        """The ``Content-Type`` it is served with."""
        return self.value[1]


def _kind(name: str) -> UiFileKind | None:
    """The kind of a file name, None for a name the dashboard never has (a path, a hidden file, another suffix)."""
    if "/" in name or "\\" in name or name.startswith("."):
        return None
    return next((kind for kind in UiFileKind if name.endswith(kind.suffix)), None)


def ui_response(name: str) -> Response:
    """The dashboard's file ``name`` (``index.html`` for the empty name); 404 if it has none of that name."""
    name = name or INDEX
    kind = _kind(name)
    resource = resources.files(UI_PACKAGE).joinpath(name)
    if kind is None or not resource.is_file():
        raise HttpError(404, "not_found", f"no such resource: /ui/{name}")
    response = Response(status=200, body=resource.read_bytes())
    response.headers["Content-Type"] = kind.content_type
    response.headers["Cache-Control"] = "no-cache"
    return response
