"""The router's copy of the controller's session table: rows in, pins out, stale rows gone, bad rows counted."""

from __future__ import annotations

import asyncio

from nlb_sdn.affinity.sessions import Session, SessionTable
from nlb_sdn.dam.atoms import session_key
from nlb_sdn.router.sessions import follow_sessions, replace_sessions, session_from_row
from tests.lib.polling import poll_until_async


def row(sid: str, member: str, vip: str = "web", expires_in: float = 60.0) -> dict:
    """A ``GET /v1/sessions`` row as the controller writes it."""
    session = Session(sid, "app", vip, member, "10.0.0.13", 80, "10.0.0.1", "h3", 1000.0 + expires_in, "lbu:1")
    return session.as_dict(1000.0)


def test_a_row_becomes_the_same_session_with_its_expiry_on_our_clock():
    session = session_from_row(row("abc", "h3", expires_in=30.0), now=50.0)
    assert (session.key, session.member, session.pip, session.pport, session.expires_at) == (
        session_key("app", "abc"),
        "h3",
        "10.0.0.13",
        80,
        80.0,
    )


def test_replacing_keeps_exactly_the_controllers_live_rows_of_the_vip():
    table = SessionTable()
    assert replace_sessions(table, "web", [row("a", "h1"), row("b", "h2"), row("x", "h1", vip="api")], 0.0) == 0
    assert sorted(table.sessions) == [session_key("app", "a"), session_key("app", "b")]
    table.upsert(session_from_row(row("keep", "h1", vip="api"), 0.0))
    bad = replace_sessions(table, "web", [row("b", "h3"), row("gone", "h1", expires_in=-1.0), {"identifier": "z"}], 0.0)
    assert bad == 1
    assert sorted(table.sessions) == [session_key("app", "b"), session_key("app", "keep")]
    assert table.sessions[session_key("app", "b")].member == "h3"


def test_following_survives_a_controller_that_is_away():
    table = SessionTable()
    calls: list[str] = []

    def fetch(vip: str) -> list[dict]:
        calls.append(vip)
        if len(calls) == 1:
            raise OSError("connection refused")
        return [row("s1", "h2")]

    async def scenario() -> None:
        task = asyncio.create_task(follow_sessions(table, ["web"], fetch, lambda: 0.0, period=0.01))
        await poll_until_async(lambda: table.sessions, timeout=2.0)
        task.cancel()

    asyncio.run(scenario())
    assert len(calls) >= 2 and list(table.sessions) == [session_key("app", "s1")]
