"""The REST API of the load balancer: a WSGI app on webob (:mod:`.app`) and its eventlet server (:mod:`.server`)."""

from nlb_sdn.rest.app import MAX_BODY, RestApp, RestBackend, make_app
from nlb_sdn.rest.server import listen, serve, serve_on

__all__ = ["MAX_BODY", "RestApp", "RestBackend", "listen", "make_app", "serve", "serve_on"]
