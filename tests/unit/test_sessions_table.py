"""The session table 2014: expiry by ``now``, client index, selection by VIP and member."""

from __future__ import annotations

from nlb_sdn.affinity.sessions import Session, SessionTable, client_ip_sid, client_prefix
from nlb_sdn.dam.atoms import any_type_session_key, session_key


def session(sid: str, client: str, member: str = "h1", expires_at: float = 10.0) -> Session:
    return Session(sid, "client_ip", "web", member, "10.0.0.11", 80, client, "", expires_at, "lbu:1")


def test_lookup_expiry_and_index():
    table = SessionTable()
    table.upsert(session("a", "10.0.0.1", expires_at=10.0))
    table.upsert(session("b", "10.0.0.2", member="h2", expires_at=20.0))
    assert table.lookup("client_ip", "web", "10.0.0.1", now=5.0).sid == "a"
    assert table.lookup("client_ip", "web", "10.0.0.1", now=10.0) is None, "expired at its expiry time"
    assert len(table) == 1
    assert [s.sid for s in table.expire(now=25.0)] == ["b"]
    assert len(table) == 0


def test_replacing_a_session_moves_its_index_and_select_filters():
    table = SessionTable()
    table.upsert(session("a", "10.0.0.1"))
    table.upsert(session("a", "10.0.0.9", member="h3"))
    assert table.lookup("client_ip", "web", "10.0.0.1", now=1.0) is None
    assert table.lookup("client_ip", "web", "10.0.0.9", now=1.0).member == "h3"
    assert [s.sid for s in table.select(vip="web", member="h3")] == ["a"]
    assert table.select(member="h1") == []
    key = session_key("client_ip", "a")
    assert table.remove(key) is not None and table.remove(key) is None


def test_client_prefixes_and_identifiers():
    assert client_prefix("10.0.5.77", 32) == "10.0.5.77"
    assert client_prefix("10.0.5.77", 24) == "10.0.5.0/24"
    assert client_ip_sid("web", "10.0.5.77", 24) == "web@10.0.5.0_24"
    data = session("a", "10.0.0.1").to_data()
    assert Session.from_data(data, 99.0, "lbu:2").expires_at == 99.0


def test_a_session_of_an_applications_own_type_is_keyed_by_the_dam_layout():
    cart = Session("c-1", "cart", "web", "h1", "10.0.0.11", 80, "10.0.0.1", "h1", 10.0, "lbu:1")
    table = SessionTable()
    table.upsert(cart)
    assert cart.key == any_type_session_key("cart", "c-1") and table.lookup("cart", "web", "10.0.0.1", 1.0) is cart
