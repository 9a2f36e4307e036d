"""Serving the REST API with eventlet's WSGI server, in a hub (green) thread of the controller.

Nothing here monkey-patches: the controller's framework owns the eventlet hub. To fail fast when the port is taken,
open the socket with :func:`listen` before the controller reports ready, then run :func:`serve_on` in a hub thread::

    sock = listen(host, port, tls)         # raises OSError now if host:port is unusable
    hub.spawn(serve_on, sock, make_app(backend), None, limits)
"""

from __future__ import annotations

import logging
import socket
import ssl
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

# eventlet >= 0.37 warns at import that it is deprecated; os-ken runs on it, so that is known noise.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

import eventlet  # noqa: E402
import eventlet.green.ssl  # noqa: E402
import eventlet.wsgi  # noqa: E402

from nlb_sdn.config.rest import Rest  # noqa: E402

LOG = logging.getLogger(__name__)

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Any]


class ServerLimits(NamedTuple):
    """How long a client may take and how many may be connected at once (``controller.rest``)."""

    max_connections: int = 512
    header_timeout: float = 10.0
    request_timeout: float = 60.0
    socket_timeout: float = 30.0


def _deadline_protocol(limits: ServerLimits) -> type[eventlet.wsgi.HttpProtocol]:
    """eventlet's HTTP protocol with deadlines: the request line and headers (and a keep-alive wait) must arrive
    within ``header_timeout``, the whole request within ``request_timeout``; a slower client is cut off."""

    class DeadlineProtocol(eventlet.wsgi.HttpProtocol):
        """One connection's requests, each under the header and request deadlines."""

        head_timer: eventlet.Timeout | None = None

        def handle_one_request(self) -> None:
            """Serve one request, or close the connection when a deadline passes."""
            request_timer = eventlet.Timeout(limits.request_timeout)
            self.head_timer = eventlet.Timeout(limits.header_timeout)
            try:
                super().handle_one_request()
            except eventlet.Timeout as expired:
                if expired not in (request_timer, self.head_timer):
                    raise
                which = "header" if expired is self.head_timer else "request"
                LOG.info("REST client %s too slow (%s deadline): connection closed", self.client_address, which)
                self.close_connection = 1
            finally:
                self.head_timer.cancel()
                request_timer.cancel()

        def get_environ(self) -> dict[str, Any]:
            """Called once the headers are in: the header deadline is met."""
            if self.head_timer is not None:
                self.head_timer.cancel()
            environ: dict[str, Any] = super().get_environ()
            return environ

    return DeadlineProtocol


def tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """A green server-side TLS context (TLS 1.2 or newer) from PEM files; OSError or ssl.SSLError if they fail."""
    context = eventlet.green.ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # green: its sockets yield to the hub
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context


def listen(host: str, port: int, tls: ssl.SSLContext | None = None) -> socket.socket:
    """Open the listening socket on host:port now (TLS-wrapped with ``tls``); raise OSError naming host:port if it
    cannot be used. The TLS handshake of each client runs later, in that client's own green thread."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        # No SO_REUSEPORT (eventlet's default for fixed ports): a second controller on the same port must fail.
        sock = eventlet.listen((host, port), family=family, reuse_port=False)
    except OSError as exc:
        raise OSError(exc.errno, f"REST API cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    if tls is None:
        return sock
    wrapped: socket.socket = tls.wrap_socket(sock, server_side=True)
    return wrapped


def serve_on(sock: socket.socket, app: WsgiApp, log: Any = None, limits: ServerLimits | None = None) -> None:
    """Serve ``app`` on a listening socket; blocks the calling green thread until it is killed or sock closes."""
    limits = limits or ServerLimits()
    eventlet.wsgi.server(
        sock,
        app,
        log=log or LOG,
        log_output=False,
        debug=False,
        max_size=limits.max_connections,
        socket_timeout=limits.socket_timeout,
        protocol=_deadline_protocol(limits),
    )


def serve(app: WsgiApp, host: str, port: int, log: Any = None, limits: ServerLimits | None = None) -> None:
    """Listen on host:port and serve ``app`` forever in the calling green thread (for ``hub.spawn``)."""
    serve_on(listen(host, port), app, log, limits)


def limits_of(settings: Rest) -> ServerLimits:
    """The server limits of a ``controller.rest`` section."""
    return ServerLimits(
        settings.max_connections, settings.header_timeout, settings.request_timeout, settings.socket_timeout
    )


def listen_rest(settings: Rest) -> socket.socket:
    """The listening socket of a ``controller.rest`` section, TLS-wrapped when it names a certificate; OSError (or
    ssl.SSLError) now when the address or the certificate cannot be used."""
    tls = tls_context(settings.tls.cert_file, settings.tls.key_file) if settings.tls.enabled else None
    return listen(settings.host, settings.port, tls)


def rest_url(settings: Rest) -> str:
    """Where a ``controller.rest`` section serves the API, for the log."""
    scheme = "https" if settings.tls.enabled else "http"
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    return f"{scheme}://{host}:{settings.port}/v1/"
