"""Serving the REST API with eventlet's WSGI server, in a hub (green) thread of the controller.

Nothing here monkey-patches: the controller's framework owns the eventlet hub. To fail fast when the port is taken,
open the socket with :func:`listen` before the controller reports ready, then run :func:`serve_on` in a hub thread::

    sock = listen(host, port)              # raises OSError now if host:port is unusable
    hub.spawn(serve_on, sock, make_app(backend))
"""

from __future__ import annotations

import logging
import socket
import warnings
from collections.abc import Callable
from typing import Any

# eventlet >= 0.37 warns at import that it is deprecated; os-ken runs on it, so that is known noise.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

import eventlet  # noqa: E402
import eventlet.wsgi  # noqa: E402

LOG = logging.getLogger(__name__)

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Any]


def listen(host: str, port: int) -> socket.socket:
    """Open the listening socket on host:port now; raise OSError naming host:port if it cannot be used."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        # No SO_REUSEPORT (eventlet's default for fixed ports): a second controller on the same port must fail.
        return eventlet.listen((host, port), family=family, reuse_port=False)
    except OSError as exc:
        raise OSError(exc.errno, f"REST API cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


def serve_on(sock: socket.socket, app: WsgiApp, log: Any = None) -> None:
    """Serve ``app`` on a listening socket; blocks the calling green thread until it is killed or sock closes."""
    eventlet.wsgi.server(sock, app, log=log or LOG, log_output=False, debug=False)


def serve(app: WsgiApp, host: str, port: int, log: Any = None) -> None:
    """Listen on host:port and serve ``app`` forever in the calling green thread (for ``hub.spawn``)."""
    serve_on(listen(host, port), app, log)
