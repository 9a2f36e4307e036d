"""The controller process's garbage-collector policy: a full collection never scans the long-lived heap twice.

CPython's full (generation 2) collection visits every container object alive. With 1,000,000 tracked connections
(a ``Connection`` and its route each) that is over 2 million objects, and the collection, which runs inside whichever
handler allocated last, held the event loop for 0.4 to 1.7 s (``benchmarks/scale.py``). After each full collection
the survivors are moved to the permanent generation (``gc.freeze``), so the next one only visits what was allocated
since: pauses stay in the tens of milliseconds however large the table. Objects that die by reference counting are
freed as before; only a reference cycle among frozen objects would stay (the core builds none per connection).
"""

from __future__ import annotations

import gc
from typing import Any

FULL_GENERATION = 2


def _freeze_after_full(phase: str, info: dict[str, Any]) -> None:
    """The ``gc.callbacks`` hook: freeze the survivors of a full collection."""
    if phase == "stop" and info.get("generation") == FULL_GENERATION:
        gc.freeze()


def freeze_survivors() -> None:
    """Freeze what is alive now, and the survivors of every later full collection (idempotent)."""
    if _freeze_after_full not in gc.callbacks:
        gc.callbacks.append(_freeze_after_full)
    gc.freeze()


def default_policy() -> None:
    """Back to CPython's own policy: no hook, nothing frozen (benchmarks compare both)."""
    if _freeze_after_full in gc.callbacks:
        gc.callbacks.remove(_freeze_after_full)
    gc.unfreeze()


def installed() -> bool:
    """Whether :func:`freeze_survivors` is in force."""
    return _freeze_after_full in gc.callbacks
