"""ryu 4.34 on today's eventlet and Python: :func:`apply_eventlet_fix`, and the start-up hook that applies it for ryu's
own entry points (a bare ``ryu-manager``).

ryu 4.34 is unmaintained and predates the eventlet and Python we run it with. :func:`apply_eventlet_fix` patches what
it needs and must run before ryu is imported; ``nlb_sdn.framework`` calls it when it selects ryu. A bare
``ryu-manager`` imports ryu (and dies on ``ALREADY_HANDLED``) before it loads any app of ours, so .venv-ryu carries a
hook: scripts/ryu-venv.sh copies this file into the venv's site-packages as ``nlb_sdn_ryu_compat.py`` with
``nlb_sdn_ryu_compat.pth``, which calls :func:`install_import_hook` when the interpreter starts. The hook applies the
fix just before the first ``import ryu`` of a process, whatever the entry point; a process that never imports ryu
(pip, pytest, ...) pays for loading this small module and nothing else.

This module is therefore standalone: the standard library only at import, eventlet only once the fix runs, no import
of nlb_sdn. Install or check the hook with ``python nlb_sdn/framework/ryu_compat.py [--check] SITE_PACKAGES_DIR``.
"""

from __future__ import annotations

import os
import sys

EVENTLET_DEPRECATION = r"\s*Eventlet is deprecated"
"""The warning eventlet >= 0.37 gives at import. os-ken and ryu both run on eventlet, so that is known noise."""

# The value ryu's websocket responses return once eventlet.websocket has handled the connection. eventlet
# <= 0.30.2 compared the WSGI result against its own ALREADY_HANDLED sentinel; newer eventlet removed the sentinel
# (WebSocketWSGI now sets wsgi.WSGI_LOCAL.already_handled and returns []) and iterates whatever the app returns,
# so the stand-in has to be an empty iterable: a sentinel object() would make eventlet fail with "not iterable".
ALREADY_HANDLED_STANDIN: tuple = ()

HOOK_MODULE = "nlb_sdn_ryu_compat"
"""The name this module has in .venv-ryu's site-packages, where the start-up hook imports it from."""
HOOK_PTH_LINE = f"import {HOOK_MODULE}; {HOOK_MODULE}.install_import_hook()\n"
"""The content of the hook's .pth file: site.py runs it when the interpreter starts."""

_ABC_ALIASES = (
    "Callable",
    "Mapping",
    "MutableMapping",
    "Sequence",
    "MutableSequence",
    "Iterable",
    "Iterator",
    "Set",
    "MutableSet",
    "Hashable",
    "Sized",
    "Container",
    "Generator",
)


def _ssl_wrap_socket(
    sock,
    keyfile=None,
    certfile=None,
    server_side=False,
    cert_reqs=None,
    ssl_version=None,
    ca_certs=None,
    do_handshake_on_connect=True,
    suppress_ragged_eofs=True,
    ciphers=None,
):
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
    return context.wrap_socket(
        sock,
        server_side=server_side,
        do_handshake_on_connect=do_handshake_on_connect,
        suppress_ragged_eofs=suppress_ragged_eofs,
    )


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

    It also silences eventlet's deprecation warning (EVENTLET_DEPRECATION), which ryu would print at every start.
    What needs no patch with eventlet 0.41.3 + dnspython >= 2: eventlet.green (ryu uses only eventlet.semaphore,
    eventlet.websocket, eventlet.wsgi.server, which all still exist), and ryu.lib.hub.WSGIServer/StreamServer.
    """
    import collections
    import collections.abc
    import ssl
    import warnings

    warnings.filterwarnings("ignore", message=EVENTLET_DEPRECATION)
    import eventlet.wsgi

    patched: list[str] = []
    if not hasattr(eventlet.wsgi, "ALREADY_HANDLED"):
        eventlet.wsgi.ALREADY_HANDLED = ALREADY_HANDLED_STANDIN
        patched.append("eventlet.wsgi.ALREADY_HANDLED")
    if not hasattr(ssl, "wrap_socket"):
        ssl.wrap_socket = _ssl_wrap_socket
        patched.append("ssl.wrap_socket")
    for name in _ABC_ALIASES:
        if not hasattr(collections, name):
            setattr(collections, name, getattr(collections.abc, name))
            patched.append(f"collections.{name}")
    return patched


class RyuImportHook:
    """A ``sys.meta_path`` finder that finds nothing: it applies :func:`apply_eventlet_fix` when ryu is looked up.

    The lookup of the top-level ``ryu`` happens once per process (then ryu is in sys.modules), before any of ryu's
    code runs; every other name costs one comparison.
    """

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        """Apply the fix if ``name`` is ryu; leave the finding to the next finders either way."""
        if name == "ryu":
            apply_eventlet_fix()


def install_import_hook() -> None:
    """Put a RyuImportHook first on ``sys.meta_path`` (once: site.py may run the .pth twice, via lib and lib64)."""
    if not any(isinstance(finder, RyuImportHook) for finder in sys.meta_path):
        sys.meta_path.insert(0, RyuImportHook())


def hook_files() -> dict[str, str]:
    """The hook's files in a site-packages directory, by name: this module as HOOK_MODULE, and the .pth that runs it."""
    with open(__file__, encoding="utf-8") as source:
        return {f"{HOOK_MODULE}.py": source.read(), f"{HOOK_MODULE}.pth": HOOK_PTH_LINE}


def stale_hook_files(site_dir: str) -> list[str]:
    """The names of the hook's files that are missing from ``site_dir`` or differ from this module's."""
    stale = []
    for name, content in hook_files().items():
        try:
            with open(os.path.join(site_dir, name), encoding="utf-8") as installed:
                current = installed.read() == content
        except FileNotFoundError:
            current = False
        if not current:
            stale.append(name)
    return stale


def install_hook(site_dir: str) -> list[str]:
    """Write the hook's missing or outdated files into ``site_dir``; return their names."""
    stale = stale_hook_files(site_dir)
    files = hook_files()
    for name in stale:
        with open(os.path.join(site_dir, name), "w", encoding="utf-8") as installed:
            installed.write(files[name])
    return stale


def main(argv: list[str]) -> int:
    """``ryu_compat.py [--check] SITE_DIR``: install the hook into SITE_DIR, or with --check exit 1 if it is stale."""
    if len(argv) not in (1, 2) or (len(argv) == 2 and argv[0] != "--check"):
        print(f"usage: {os.path.basename(__file__)} [--check] SITE_PACKAGES_DIR", file=sys.stderr)
        return 2
    site_dir = argv[-1]
    if len(argv) == 2:
        return 1 if stale_hook_files(site_dir) else 0
    install_hook(site_dir)
    return 0


if __name__ == "__main__":  # run by path from scripts/ryu-venv.sh, so that nothing imports a framework
    sys.exit(main(sys.argv[1:]))
