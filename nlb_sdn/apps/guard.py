"""The guard around every event handler of the classifier app: a failing handler never stops the event loop."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

LOG = logging.getLogger("nlb_sdn.classifier")


def guarded(handler: Callable[[Any, Any], None]) -> Callable[[Any, Any], None]:
    """Log and count any exception a handler raises, naming the datapath, instead of killing the event loop."""

    @functools.wraps(handler)
    def wrapper(self: Any, ev: Any) -> None:
        try:
            handler(self, ev)
        except Exception:  # a handler must never take the controller down
            dpid = getattr(getattr(getattr(ev, "msg", None), "datapath", None), "id", None)
            self.errors[f"handler:{handler.__name__}"] += 1
            LOG.exception("dpid=%s: %s failed", f"{dpid:016x}" if isinstance(dpid, int) else dpid, handler.__name__)

    return wrapper
