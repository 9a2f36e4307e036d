"""The REST API over the real core on a real eventlet WSGI server on 127.0.0.1, in its own process.

``python -m tests.lib.live_rest PORT [READER_TOKEN]`` serves ``make_app`` over the properties tests' ``CoreBackend``
(the controller's facade over the pure core and an in-memory DAM), with something in every list, until it is stopped;
with ``READER_TOKEN`` the API needs it (a ``reader`` token). :func:`live_rest` starts it and stops it by its PID.
"""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.lib.net import free_port
from tests.lib.polling import poll_until
from tests.lib.processes import stop_process

START_TIMEOUT = 20.0
ROOT = Path(__file__).resolve().parents[2]


def _answers(url: str) -> bool:
    """Whether ``url`` answers 200 now."""
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@contextmanager
def live_rest(reader_token: str | None = None) -> Iterator[str]:
    """The base URL (``http://127.0.0.1:PORT``) of a live REST API over the real core, stopped on exit; with
    ``reader_token`` the API needs that token (a ``reader``)."""
    port = free_port()
    token_args = [] if reader_token is None else [reader_token]
    proc = subprocess.Popen([sys.executable, "-m", "tests.lib.live_rest", str(port), *token_args], cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    started = base + ("/v1/openapi.json" if reader_token is None else "/ui/")
    try:
        assert poll_until(lambda: _answers(started), START_TIMEOUT, 0.1), "REST API did not start"
        yield base
    finally:
        stop_process(proc)


def populated_backend() -> Any:
    """The properties tests' CoreBackend with something in every list: VIP web pins clients (sessions), its
    connections' route and session atoms are in the DAM (as ``apps/classifier.py:dam_page`` shows them), and one
    migration of VIP front is committed."""
    from nlb_sdn.config import dump_config, parse_config
    from nlb_sdn.core.effects import DamVerb
    from nlb_sdn.dam.atoms import ROUTE_PREFIX, SESSION_PREFIX
    from tests.lib.core import punt_syns
    from tests.unit.test_properties_rest import NOW, CoreBackend

    class LiveBackend(CoreBackend):
        """CoreBackend whose DAM pages show atoms as the controller's facade does."""

        def dam_page(self, kind: str, cursor: str | None, count: int) -> dict:
            prefix = ROUTE_PREFIX if kind == "route" else SESSION_PREFIX
            atoms, next_cursor = self.dam.scan(prefix, cursor, count, NOW)
            rows = [
                {
                    "key": a.key,
                    "data": a.data,
                    "metadata": {"version": a.version, "origin": a.origin, "expires_at": a.expires_at},
                }
                for a in atoms
            ]
            return {"kind": kind, "atoms": rows, "count": len(rows), "next_cursor": next_cursor}

    backend = LiveBackend()
    data = dump_config(backend.current_config())
    data["vips"][0].update(affinity="client_ip", switch_pinning="learn")
    backend.apply_config(parse_config(data, source="live_rest"))
    punt_syns(backend.lb, 2, first_port=41000, now=NOW)
    for op in backend.lb.dam_ops:
        if op.verb == DamVerb.PUT and op.data is not None:
            backend.dam.put(op.key, op.data, origin="lbu:1", ttl=op.ttl, now=NOW)
    backend.lb.migrations.committed("m1", "10.0.0.1:40000", "front", "c1", "h1", NOW)
    return backend


def main(port: int, reader_token: str | None = None) -> None:
    """Serve the API over a populated backend on 127.0.0.1:``port`` until killed; with ``reader_token``, only to it."""
    from nlb_sdn.config import dump_config, parse_config
    from nlb_sdn.rest import make_app, serve, token_sha256

    backend = populated_backend()
    if reader_token is not None:
        data = dump_config(backend.current_config())
        data["controller"]["rest"]["tokens"] = [
            {"name": "dash", "role": "reader", "sha256": token_sha256(reader_token)}
        ]
        backend.apply_config(parse_config(data, source="live_rest"))
    serve(make_app(backend), "127.0.0.1", port)


if __name__ == "__main__":
    main(int(sys.argv[1]), *sys.argv[2:3])
