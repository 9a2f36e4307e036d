"""The REST API of the load balancer: a WSGI app on webob (:mod:`.app`) and its eventlet server (:mod:`.server`)."""

from nlb_sdn.rest.app import RestApp, RestBackend, make_app
from nlb_sdn.rest.auth import token_sha256
from nlb_sdn.rest.body import MAX_BODY
from nlb_sdn.rest.server import ServerLimits, listen, listen_rest, serve, serve_on, tls_context

__all__ = [
    "MAX_BODY",
    "RestApp",
    "RestBackend",
    "ServerLimits",
    "listen",
    "listen_rest",
    "make_app",
    "serve",
    "serve_on",
    "tls_context",
    "token_sha256",
]
