"""The one place that imports the Ryu API: from os_ken by default, or from ryu when selected.

Set ``NLB_SDN_FRAMEWORK=ryu`` to use an installed ryu (4.34); ``os_ken`` (or ``os-ken``/``osken``) forces os-ken;
unset, os_ken is used, falling back to ryu when os_ken is missing. Every other module imports app_manager, events,
decorators, ofproto and the packet library from here.

ryu 4.34 is unmaintained and predates the eventlet and Python we run it with; :func:`apply_eventlet_fix` patches
what it needs and runs before any ryu module is imported. To run apps under either manager with the fix applied::

    python -m nlb_sdn.framework --ofp-tcp-listen-port 6653 nlb_sdn.apps.some_app [more apps...]

(the same arguments as ``osken-manager`` / ``ryu-manager``; ``osken-manager`` itself also works for os-ken, but a
bare ``ryu-manager`` does not: it imports ryu.app.wsgi, which fails on eventlet > 0.30.2, before it loads an app).
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from typing import Optional, Sequence

_FRAMEWORKS = {"ryu": "ryu", "os_ken": "os_ken", "os-ken": "os_ken", "osken": "os_ken"}

# eventlet >= 0.37 warns at import that it is deprecated; both os-ken and ryu run on it, so that is known noise.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")


def _choose() -> str:
    """The framework package name to import: 'os_ken' or 'ryu'."""
    wanted = os.environ.get("NLB_SDN_FRAMEWORK", "").strip().lower()
    if wanted in _FRAMEWORKS:
        return _FRAMEWORKS[wanted]
    if wanted:
        raise ImportError(f"NLB_SDN_FRAMEWORK={wanted!r}: expected 'os_ken' or 'ryu'")
    try:
        importlib.import_module("os_ken")
        return "os_ken"
    except ImportError:
        return "ryu"


# The value ryu's websocket responses return once eventlet.websocket has handled the connection. eventlet
# <= 0.30.2 compared the WSGI result against its own ALREADY_HANDLED sentinel; newer eventlet removed the sentinel
# (WebSocketWSGI now sets wsgi.WSGI_LOCAL.already_handled and returns []) and iterates whatever the app returns,
# so the stand-in has to be an empty iterable: a sentinel object() would make eventlet fail with "not iterable".
ALREADY_HANDLED_STANDIN: tuple = ()


def _ssl_wrap_socket(sock, keyfile=None, certfile=None, server_side=False, cert_reqs=None, ssl_version=None,
                     ca_certs=None, do_handshake_on_connect=True, suppress_ragged_eofs=True, ciphers=None):
    """ssl.wrap_socket (removed in Python 3.12) on top of SSLContext, for ryu.lib.hub's TLS paths."""
    import ssl

    if ssl_version is None:
        ssl_version = ssl.PROTOCOL_TLS_SERVER if server_side else ssl.PROTOCOL_TLS_CLIENT
    context = ssl.SSLContext(ssl_version)
    if ssl_version == ssl.PROTOCOL_TLS_CLIENT:
        context.check_hostname = False  # the old function never checked host names
    context.verify_mode = ssl.CERT_NONE if cert_reqs is None else cert_reqs
    if ca_certs:
        context.load_verify_locations(ca_certs)
    if certfile:
        context.load_cert_chain(certfile, keyfile)
    if ciphers:
        context.set_ciphers(ciphers)
    return context.wrap_socket(sock, server_side=server_side, do_handshake_on_connect=do_handshake_on_connect,
                               suppress_ragged_eofs=suppress_ragged_eofs)


def apply_eventlet_fix() -> list[str]:
    """Patch eventlet and the standard library so that ryu 4.34 imports and runs; return what was patched.

    Idempotent, and harmless under os-ken (which needs none of it). Must run before ryu is imported:
    ``ryu.app.wsgi`` (imported by ``ryu.cmd.manager``) reads ``eventlet.wsgi.ALREADY_HANDLED`` in a class body.

    * ``eventlet.wsgi.ALREADY_HANDLED``: removed in eventlet 0.30.3; ryu.app.wsgi imports it. Restored as an
      empty tuple, which is what eventlet >= 0.30.3 expects a handled websocket response to return.
    * ``ssl.wrap_socket``: removed in Python 3.12; ryu.lib.hub uses it for TLS (OpenFlow over SSL). Only added
      when missing, so on Python 3.11 nothing changes.
    * ``collections.Callable`` and the other ABC aliases removed in Python 3.10: ryu 4.34's own code does not use
      them, but old ryu apps and libraries written against it do; added only where missing.

    What needs no patch with eventlet 0.41.3 + dnspython >= 2: eventlet.green (ryu uses only eventlet.semaphore,
    eventlet.websocket, eventlet.wsgi.server, which all still exist), and ryu.lib.hub.WSGIServer/StreamServer.
    """
    patched: list[str] = []

    import eventlet.wsgi

    if not hasattr(eventlet.wsgi, "ALREADY_HANDLED"):
        eventlet.wsgi.ALREADY_HANDLED = ALREADY_HANDLED_STANDIN
        patched.append("eventlet.wsgi.ALREADY_HANDLED")

    import ssl

    if not hasattr(ssl, "wrap_socket"):
        ssl.wrap_socket = _ssl_wrap_socket
        patched.append("ssl.wrap_socket")

    import collections
    import collections.abc

    for name in ("Callable", "Mapping", "MutableMapping", "Sequence", "MutableSequence", "Iterable", "Iterator",
                 "Set", "MutableSet", "Hashable", "Sized", "Container", "Generator"):
        if not hasattr(collections, name):
            setattr(collections, name, getattr(collections.abc, name))
            patched.append(f"collections.{name}")
    return patched


NAME = _choose()
if NAME == "ryu":
    apply_eventlet_fix()

_base = importlib.import_module(NAME)
app_manager = importlib.import_module(f"{NAME}.base.app_manager")
ofp_event = importlib.import_module(f"{NAME}.controller.ofp_event")
handler = importlib.import_module(f"{NAME}.controller.handler")
controller_dpset = importlib.import_module(f"{NAME}.controller.dpset")
ofproto_v1_3 = importlib.import_module(f"{NAME}.ofproto.ofproto_v1_3")
ofproto_v1_3_parser = importlib.import_module(f"{NAME}.ofproto.ofproto_v1_3_parser")
ether_types = importlib.import_module(f"{NAME}.lib.packet.ether_types")
packet = importlib.import_module(f"{NAME}.lib.packet.packet")
ethernet = importlib.import_module(f"{NAME}.lib.packet.ethernet")
arp = importlib.import_module(f"{NAME}.lib.packet.arp")
ipv4 = importlib.import_module(f"{NAME}.lib.packet.ipv4")
tcp = importlib.import_module(f"{NAME}.lib.packet.tcp")
udp = importlib.import_module(f"{NAME}.lib.packet.udp")
icmp = importlib.import_module(f"{NAME}.lib.packet.icmp")
hub = importlib.import_module(f"{NAME}.lib.hub")

RyuApp = getattr(app_manager, "OSKenApp", None) or app_manager.RyuApp
set_ev_cls = handler.set_ev_cls
CONFIG_DISPATCHER = handler.CONFIG_DISPATCHER
MAIN_DISPATCHER = handler.MAIN_DISPATCHER
DEAD_DISPATCHER = handler.DEAD_DISPATCHER


def _distribution_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("os-ken" if NAME == "os_ken" else "ryu")
    except metadata.PackageNotFoundError:  # pragma: no cover - a source checkout without metadata
        return "unknown"


VERSION = _distribution_version()
"""The selected framework's version, e.g. '3.1.0' (os-ken) or '4.34' (ryu)."""


def manager_main(args: Optional[Sequence[str]] = None) -> None:
    """Run the framework's manager (osken-manager's or ryu-manager's main) with ``args`` or sys.argv[1:].

    Accepts what the manager accepts: ``--ofp-tcp-listen-port N``, ``--ofp-listen-host H``, ``--verbose``,
    ``--config-file F``, ``--pid-file F``, then app modules as module paths (``nlb_sdn.apps.x``) or file paths.
    """
    if NAME == "ryu":
        apply_eventlet_fix()
    manager = importlib.import_module(f"{NAME}.cmd.manager")  # importing it monkey-patches (thread=False)
    prog = "osken-manager" if NAME == "os_ken" else "ryu-manager"
    manager.main(args=list(args) if args is not None else None, prog=prog)


if __name__ == "__main__":  # python -m nlb_sdn.framework [manager options] APP...
    # Run the imported module's manager_main, not this __main__ copy's, so that there is one nlb_sdn.framework.
    importlib.import_module("nlb_sdn.framework").manager_main(sys.argv[1:])
