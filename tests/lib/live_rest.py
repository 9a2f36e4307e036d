"""The REST API over the real core on a real eventlet WSGI server on 127.0.0.1, in its own process.

``python -m tests.lib.live_rest PORT`` serves ``make_app`` over the properties tests' ``CoreBackend`` (the
controller's facade over the pure core and an in-memory DAM) until it is stopped; :func:`live_rest` starts it and
stops it by its PID.
"""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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
def live_rest() -> Iterator[str]:
    """The base URL (``http://127.0.0.1:PORT``) of a live REST API over the real core, stopped on exit."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.lib.live_rest", str(port)], cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        assert poll_until(lambda: _answers(base + "/v1/openapi.json"), START_TIMEOUT, 0.1), "REST API did not start"
        yield base
    finally:
        stop_process(proc)


def main(port: int) -> None:
    """Serve the API over a fresh CoreBackend on 127.0.0.1:``port`` until killed."""
    from nlb_sdn.rest import make_app, serve
    from tests.unit.test_properties_rest import CoreBackend

    serve(make_app(CoreBackend()), "127.0.0.1", port)


if __name__ == "__main__":
    main(int(sys.argv[1]))
