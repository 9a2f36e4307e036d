"""Bounded waits for a condition that other threads, processes or event loops make true."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
DEFAULT_TIMEOUT = 5.0


def poll_until(condition: Callable[[], T], timeout: float = DEFAULT_TIMEOUT, interval: float = 0.01) -> T:
    """Call ``condition`` every ``interval`` s until it returns a truthy value or ``timeout`` s have passed; its last
    value (falsy after a timeout, so the caller's assertion shows what never came)."""
    deadline = time.monotonic() + timeout
    while not (value := condition()) and time.monotonic() < deadline:
        time.sleep(interval)
    return value


async def poll_until_async(condition: Callable[[], T], timeout: float = DEFAULT_TIMEOUT, interval: float = 0.01) -> T:
    """:func:`poll_until` inside an event loop: sleeps with ``asyncio.sleep`` so the loop's tasks run meanwhile."""
    deadline = time.monotonic() + timeout
    while not (value := condition()) and time.monotonic() < deadline:
        await asyncio.sleep(interval)
    return value
