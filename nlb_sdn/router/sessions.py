"""The router's copy of the controller's session table, so cookie and TLS-session pins follow the session tracker.

Applications report their sessions through their host's agent (``session_up``: the session id is, say, the value of
the cookie they set); the controller keeps them in its session table 2014 and the DAM. The router reads the rows of
its VIP services from ``GET /v1/sessions`` every ``period`` seconds and answers its pin rules from that copy.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any

from nlb_sdn.affinity.sessions import Session, SessionTable

log = logging.getLogger("nlb_sdn.router.sessions")
SYNC_PERIOD = 1.0


def session_from_row(row: dict[str, Any], now: float) -> Session:
    """A session from a ``GET /v1/sessions`` row; its expiry is taken relative to our clock (KeyError/ValueError)."""
    pip, pport = str(row["endpoint"]).rsplit(":", 1)
    return Session(
        str(row["identifier"]),
        str(row["type"]),
        str(row["vip"]),
        str(row["member"]),
        pip,
        int(pport),
        str(row.get("client", "")),
        str(row.get("host_id", "")),
        now + float(row["expires_in"]),
        str(row.get("origin", "")),
    )


def replace_sessions(table: SessionTable, vip: str, rows: Iterable[dict[str, Any]], now: float) -> int:
    """Make the table's sessions of ``vip`` exactly the controller's rows; how many rows were unusable."""
    fresh = {}
    bad = 0
    for row in rows:
        try:
            session = session_from_row(row, now)
        except (KeyError, TypeError, ValueError):
            bad += 1
            continue
        if session.vip == vip and session.expires_at > now:
            fresh[session.key] = session
    for key in [key for key, session in table.sessions.items() if session.vip == vip and key not in fresh]:
        table.remove(key)
    for session in fresh.values():
        table.upsert(session)
    return bad


async def follow_sessions(
    table: SessionTable,
    vips: list[str],
    fetch: Callable[[str], list[dict[str, Any]]],
    clock: Callable[[], float],
    period: float = SYNC_PERIOD,
) -> None:
    """Refresh the table from ``fetch(vip)`` (blocking, run in a thread) every ``period`` seconds, for ever."""
    while True:
        for vip in vips:
            try:
                rows = await asyncio.to_thread(fetch, vip)
            except Exception as exc:  # noqa: BLE001 - the controller may be away; keep the last copy and retry
                log.warning("sessions of %s: %s", vip, exc)
                continue
            bad = replace_sessions(table, vip, rows, clock())
            if bad:
                log.warning("sessions of %s: %d unusable rows", vip, bad)
        await asyncio.sleep(period)
