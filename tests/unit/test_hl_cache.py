"""The consolidated H&L cache 1208: liveness, resynchronisation, warm-up gate, postulates and the REST view."""

from __future__ import annotations

from typing import Any

import pytest

from nlb_sdn.health.cache import HLCache, HostEvent, Outgoing, agent_eligibility
from nlb_sdn.health.protocol import body_ok
from nlb_sdn.health.table import FIELDS, HLTable, Row, table_checksum
from nlb_sdn.signed import Message

ADDR = ("10.0.1.1", 40000)
VIP = "10.0.0.100"


def row(pip: str = "10.0.1.1", pport: int = 8080, health: str = "ok", **fields: Any) -> Row:
    """A row of the test VIP."""
    return Row(vip=VIP, vport=80, pip=pip, pport=pport, health=health, **({"capacity": 10.0} | fields))


class Agent:
    """Builds the messages a host agent would send, with a real H&L table behind them."""

    def __init__(self, host_id: str = "h1", rows: tuple[Row, ...] = ()) -> None:
        self.host_id = host_id
        self.table = HLTable(rows)
        self.seq = 0

    def msg(self, type: str, **body: Any) -> Message:
        """A verified-looking message from this agent."""
        self.seq += 1
        return Message(type, self.host_id, self.seq, 0.0, {"host_id": self.host_id} | body)

    def heartbeat(self) -> Message:
        return self.msg("heartbeat", checksum=self.table.checksum, row_count=len(self.table), period_ms=1000)

    def snapshot(self) -> Message:
        return self.msg("snapshot", rows=[r.to_dict() for r in self.table.rows()], checksum=self.table.checksum)

    def upsert(self, new: Row) -> Message:
        change = self.table.upsert(new)
        assert change is not None
        return self.msg("row_change", **change.body(self.host_id))


def synced(cache: HLCache, agent: Agent, now: float = 0.0, addr: tuple[str, int] = ADDR) -> None:
    """Introduce ``agent`` to ``cache``: a heartbeat, then the snapshot it asks for."""
    assert [o.type for o in cache.apply(agent.heartbeat(), addr, now).outgoing] == ["get_snapshot"]
    cache.apply(agent.snapshot(), addr, now)
    assert cache.hosts[agent.host_id].warm


def assert_valid(outgoing: list[Outgoing]) -> None:
    """Every outgoing body passes the protocol's schema."""
    for out in outgoing:
        assert body_ok(out.type, out.body), out


def test_unknown_host_gets_snapshot_request() -> None:
    cache = HLCache(lbu_id=7)
    result = cache.apply(Agent(rows=(row(),)).heartbeat(), ADDR, 1.0)
    assert result.outgoing == [Outgoing(ADDR, "get_snapshot", {"lbu_id": 7, "host_id": "h1", "reason": "unknown_host"})]
    assert result.events == [HostEvent("h1", "unknown", "alive", frozenset())]
    assert_valid(result.outgoing)
    assert cache.resyncs == {"unknown_host": 1}
    assert cache.applied == {"heartbeat": 1}


def test_snapshot_replaces_rows_and_warms() -> None:
    cache = HLCache()
    old = Agent(rows=(row("10.0.1.9"),))
    synced(cache, old)
    agent = Agent(rows=(row(), row("10.0.1.2", health="failed")))
    agent.seq = old.seq
    result = cache.apply(agent.snapshot(), ADDR, 1.0)
    entry = cache.hosts["h1"]
    assert set(entry.rows) == {r.app_id for r in agent.table.rows()}
    assert entry.checksum == agent.table.checksum == entry.reported_checksum
    assert entry.warm
    assert result.outgoing == []
    assert result.changed == {("10.0.1.9", 8080), ("10.0.1.1", 8080), ("10.0.1.2", 8080)}
    assert cache.apply(agent.heartbeat(), ADDR, 1.5).outgoing == []


def test_snapshot_with_wrong_checksum_is_kept_but_not_warm() -> None:
    cache = HLCache()
    agent = Agent(rows=(row(),))
    cache.apply(agent.heartbeat(), ADDR, 0.0)
    message = agent.snapshot()
    cache.apply(Message("snapshot", "h1", 99, 0.0, message.body | {"checksum": 1}), ADDR, 0.0)
    assert not cache.hosts["h1"].warm
    assert len(cache.hosts["h1"].rows) == 1
    assert cache.anomalies == {"snapshot_checksum_mismatch": 1}


def test_heartbeat_checksum_mismatch_requests_snapshot() -> None:
    cache = HLCache()
    agent = Agent(rows=(row(),))
    synced(cache, agent)
    agent.table.upsert(row(load=3.0))
    result = cache.apply(agent.heartbeat(), ADDR, 1.0)
    assert [(o.type, o.body["reason"]) for o in result.outgoing] == [("get_snapshot", "checksum_mismatch")]
    assert cache.resyncs["checksum_mismatch"] == 1


def test_heartbeat_from_cold_host_requests_snapshot_again() -> None:
    cache = HLCache()
    agent = Agent()
    cache.apply(agent.heartbeat(), ADDR, 0.0)
    result = cache.apply(agent.heartbeat(), ADDR, 1.0)
    assert [o.body["reason"] for o in result.outgoing] == ["not_warm"]


def test_row_change_with_right_prev_checksum_applies() -> None:
    cache = HLCache()
    agent = Agent(rows=(row(),))
    synced(cache, agent)
    load_only = cache.apply(agent.upsert(row(load=4.0)), ADDR, 1.0)
    assert load_only.outgoing == [] and load_only.changed == set()
    assert cache.hosts["h1"].rows[row().app_id].load == 4.0
    failed = cache.apply(agent.upsert(row(health="failed", load=4.0)), ADDR, 1.1)
    assert failed.outgoing == [] and failed.changed == {("10.0.1.1", 8080)}
    added = cache.apply(agent.upsert(row("10.0.1.2")), ADDR, 1.2)
    assert added.changed == {("10.0.1.2", 8080)}
    deleted = cache.apply(agent.msg("row_change", **agent.table.delete(row("10.0.1.2").app_id).body("h1")), ADDR, 1.3)
    assert deleted.outgoing == [] and deleted.changed == {("10.0.1.2", 8080)}
    assert cache.hosts["h1"].checksum == agent.table.checksum
    assert cache.rows_for("10.0.1.2", 8080, VIP, 80) == []
    assert cache.resyncs == {"unknown_host": 1}


def test_row_change_with_wrong_prev_checksum_requests_snapshot() -> None:
    cache = HLCache()
    agent = Agent(rows=(row(),))
    synced(cache, agent)
    agent.table.upsert(row("10.0.1.3"))
    result = cache.apply(agent.upsert(row(health="failed")), ADDR, 1.0)
    assert [(o.type, o.body["reason"]) for o in result.outgoing] == [("get_snapshot", "prev_checksum_mismatch")]
    assert_valid(result.outgoing)
    assert cache.endpoint_status("10.0.1.1", 8080, VIP, 80)[1].health == "failed"
    assert result.changed == {("10.0.1.1", 8080)}
    cache.apply(agent.snapshot(), ADDR, 1.1)
    assert cache.hosts["h1"].checksum == agent.table.checksum


def test_heartbeat_timeout_marks_failed_after_three_seconds() -> None:
    cache = HLCache(hb_period=1.0, miss_limit=3)
    agent = Agent(rows=(row(), row("10.0.1.2")))
    synced(cache, agent, now=100.0)
    assert cache.tick(102.9) == []
    assert cache.tick(103.0) == []
    events = cache.tick(103.01)
    assert events == [HostEvent("h1", "alive", "failed", frozenset({("10.0.1.1", 8080), ("10.0.1.2", 8080)}))]
    assert cache.tick(110.0) == []
    assert cache.endpoint_status("10.0.1.1", 8080, VIP, 80) == (False, row())
    back = cache.apply(agent.heartbeat(), ADDR, 111.0)
    assert back.events == [HostEvent("h1", "failed", "alive", events[0].endpoints)]
    assert back.changed == set(events[0].endpoints)
    assert back.outgoing == []
    assert cache.endpoint_status("10.0.1.1", 8080, VIP, 80) == (True, row())


def test_failed_host_with_other_checksum_is_resynced_on_return() -> None:
    cache = HLCache()
    agent = Agent(rows=(row(),))
    synced(cache, agent)
    cache.tick(5.0)
    agent.table.upsert(row(health="failed"))
    result = cache.apply(agent.heartbeat(), ADDR, 6.0)
    assert [o.body["reason"] for o in result.outgoing] == ["checksum_mismatch"]
    assert cache.hosts["h1"].status == "alive"


def test_goodbye_is_gone_at_once() -> None:
    cache = HLCache()
    agent = Agent(rows=(row(),))
    synced(cache, agent)
    result = cache.apply(agent.msg("goodbye", reason="shutdown"), ADDR, 0.5)
    assert result.events == [HostEvent("h1", "alive", "gone", frozenset({("10.0.1.1", 8080)}))]
    assert result.changed == {("10.0.1.1", 8080)}
    assert cache.hosts["h1"].status == "gone"
    assert cache.endpoint_status("10.0.1.1", 8080, VIP, 80)[0] is False
    assert cache.apply(agent.msg("goodbye", reason="shutdown"), ADDR, 0.6).events == []
    assert cache.tick(100.0) == []
    assert cache.apply(Agent("h9").msg("goodbye", reason="x"), ADDR, 0.7).events == []
    assert cache.ignored["goodbye_unknown_host"] == 1
    assert cache.applied["goodbye"] == 2


def test_warm_up_gate() -> None:
    cache = HLCache(hb_period=1.0, started_at=50.0)
    assert not cache.warm(50.5)
    assert not cache.warm(51.5)
    assert cache.warm(52.0)
    cache = HLCache(hb_period=1.0, started_at=50.0)
    a, b = Agent("a", (row(),)), Agent("b", (row("10.0.1.2"),))
    synced(cache, a, now=50.1)
    cache.apply(b.heartbeat(), ("10.0.1.2", 40000), 50.2)
    assert not cache.warm(50.3)
    assert not cache.warm(51.2)
    cache.apply(b.snapshot(), ("10.0.1.2", 40000), 51.3)
    assert cache.warm(51.3)
    cache.apply(Agent("c").heartbeat(), ("10.0.1.3", 40000), 51.4)
    assert cache.warm(51.4)


def test_warm_up_gate_waits_one_period_even_when_all_heard_are_warm() -> None:
    cache = HLCache(hb_period=1.0, started_at=0.0)
    synced(cache, Agent(rows=(row(),)), now=0.1)
    assert not cache.warm(0.5)
    assert cache.warm(1.0)


def test_agent_postulate_that_differs_gets_postulate_wrong() -> None:
    cache = HLCache(lbu_id=2)
    agent = Agent(rows=(row(),))
    synced(cache, agent)
    same = agent.msg("postulate", **{"from": "h1"}, checksum=agent.table.checksum)
    assert cache.apply(same, ADDR, 1.0).outgoing == []
    agent.table.upsert(row(load=1.0))
    result = cache.apply(agent.msg("postulate", **{"from": "h1"}, checksum=agent.table.checksum), ADDR, 1.1)
    cached = cache.hosts["h1"].checksum
    assert result.outgoing == [
        Outgoing(ADDR, "postulate_wrong", {"from": "lbu:2", "host_id": "h1", "checksum_actual": cached}),
        Outgoing(ADDR, "get_snapshot", {"lbu_id": 2, "host_id": "h1", "reason": "postulate_mismatch"}),
    ]
    assert_valid(result.outgoing)


def test_postulates_and_postulate_wrong_reply() -> None:
    cache = HLCache(lbu_id=3)
    agent = Agent(rows=(row(),))
    synced(cache, agent)
    cold = Agent("cold")
    cache.apply(cold.heartbeat(), ("10.0.1.5", 40000), 0.0)
    out = cache.postulates({"h1": {row().app_id: "active"}}, 5.0)
    assert out == [
        Outgoing(
            ADDR,
            "postulate",
            {"from": "lbu:3", "host_id": "h1", "checksum": agent.table.checksum, "current": {row().app_id: "active"}},
        )
    ]
    assert_valid(out)
    assert cache.hosts["h1"].last_postulate == 5.0
    wrong = agent.msg("postulate_wrong", **{"from": "h1"}, checksum_actual=12345)
    assert [o.body["reason"] for o in cache.apply(wrong, ADDR, 5.1).outgoing] == ["postulate_wrong"]
    right = agent.msg("postulate_wrong", **{"from": "h1"}, checksum_actual=agent.table.checksum)
    assert cache.apply(right, ADDR, 5.2).outgoing == []
    cache.tick(100.0)
    assert cache.postulates({}, 100.0) == []


def test_set_target() -> None:
    cache = HLCache(lbu_id=4)
    synced(cache, Agent(rows=(row(),)))
    out = cache.set_target("h1", row().app_id, "draining")
    assert out == [Outgoing(ADDR, "set_target_state", {"lbu_id": 4, "app_id": row().app_id, "target": "draining"})]
    assert_valid(out)
    with pytest.raises(KeyError):
        cache.set_target("nope", row().app_id, "active")
    with pytest.raises(KeyError):
        cache.set_target("h1", "10.0.0.1:1/tcp/10.0.0.2:2", "active")
    with pytest.raises(ValueError):
        cache.set_target("h1", row().app_id, "drained")


def test_sender_address_follows_the_host() -> None:
    cache = HLCache()
    agent = Agent(rows=(row(),))
    synced(cache, agent)
    cache.apply(agent.heartbeat(), ("10.0.9.9", 41000), 1.0)
    assert cache.hosts["h1"].address == ("10.0.9.9", 41000)
    assert cache.set_target("h1", row().app_id, "inactive")[0].addr == ("10.0.9.9", 41000)


def test_ignored_messages_change_nothing() -> None:
    cache = HLCache()
    forged = Message("heartbeat", "h1", 1, 0.0, {"host_id": "h2", "checksum": 0, "row_count": 0, "period_ms": 1000})
    assert cache.apply(forged, ADDR, 0.0).outgoing == []
    assert cache.apply(Message("get_snapshot", "h1", 2, 0.0, {"host_id": "h1"}), ADDR, 0.0).outgoing == []
    assert cache.hosts == {}
    assert cache.ignored == {"src_mismatch": 1, "unexpected_type": 1}
    assert cache.applied == {}


def test_rows_for_and_endpoint_status_prefer_alive_hosts() -> None:
    cache = HLCache()
    old, new = Agent("a-old", (row(health="failed"),)), Agent("b-new", (row(),))
    synced(cache, old, now=0.0)
    synced(cache, new, now=2.0, addr=("10.0.1.2", 40000))
    assert [(e.host_id, r.health) for e, r in cache.rows_for("10.0.1.1", 8080, VIP, 80)] == [
        ("a-old", "failed"),
        ("b-new", "ok"),
    ]
    assert cache.endpoint_status("10.0.1.1", 8080, VIP, 80) == (True, row(health="failed"))
    cache.tick(3.5)
    assert cache.endpoint_status("10.0.1.1", 8080, VIP, 80) == (True, row())
    assert cache.endpoint_status("10.0.1.1", 8080, VIP, 80, proto_info="GET /") == (False, None)
    assert cache.endpoint_status("10.0.1.1", 8081, VIP, 80) == (False, None)
    assert cache.rows_for("10.0.1.1", 8080, VIP, 81) == []


def test_agent_eligibility() -> None:
    assert agent_eligibility(True, row()) == (True, "")
    assert agent_eligibility(False, row()) == (False, "host not alive")
    assert agent_eligibility(True, row(health="unknown")) == (False, "health unknown")
    assert agent_eligibility(True, row(target="draining")) == (False, "target draining")
    assert agent_eligibility(False, None) == (False, "no row from any agent")


def test_as_dict_shows_hosts_checksums_and_every_row_field() -> None:
    cache = HLCache(started_at=0.0)
    agent = Agent(rows=(row(proto_info="GET /api", load=2.5), row("10.0.1.2")))
    synced(cache, agent, now=1.0)
    view = cache.as_dict(2.5)
    assert view["warm"] is True
    (host,) = view["hosts"]
    assert host["host_id"] == "h1" and host["address"] == "10.0.1.1:40000" and host["status"] == "alive"
    assert host["age"] == 1.5 and host["warm"] is True and host["row_count"] == 2
    assert host["checksum"] == {"cached": agent.table.checksum, "reported": agent.table.checksum, "in_sync": True}
    assert host["checksum"]["cached"] == table_checksum(agent.table.rows())
    for shown in host["rows"]:
        assert set(FIELDS) <= set(shown) and "app_id" in shown
    assert {"vip", "vport", "pip", "pport", "proto", "proto_info", "health", "load", "capacity"} <= set(host["rows"][0])
    assert host["rows"][0]["proto_info"] == "GET /api"
    assert view["counters"]["applied"] == {"heartbeat": 1, "snapshot": 1}
    assert view["counters"]["resyncs"] == {"unknown_host": 1}
