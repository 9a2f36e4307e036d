"""Sessions follow health (issue 11 item 5): a failed, inactive or removed member loses sessions and pins at once."""

from __future__ import annotations

from typing import Any

from nlb_sdn.config import Config, parse_config
from nlb_sdn.core.effects import DamOp, Out
from nlb_sdn.flows.pipeline import Cookie, CookieKind, Table, make_cookie
from nlb_sdn.framework import ofproto_v1_3 as ofp
from tests.lib.configs import web_config, web_member
from tests.lib.core import probe_tick, punt_syn
from tests.lib.shell_double import ShellDouble

DPIDS = (1, 2)
EXACT = (1 << 64) - 1


def config(health: str = "probe", states: dict[str, str] | None = None, **vip: Any) -> Config:
    """VIP web over h1..h3 with client_ip affinity and the ``health`` source; more VIP fields in ``vip``."""
    states = states or {}
    members = [web_member(i, health=health, state=states.get(f"h{i}", "active")) for i in (1, 2, 3)]
    return web_config(members, affinity="client_ip", **vip)


def healthy(lb: ShellDouble) -> None:
    """Every probed member answered once: all are up at t=10."""
    probe_tick(lb, 10.0)
    assert {lb.health.prober.health("web", f"h{i}") for i in (1, 2, 3)} == {"ok"}


def fail(lb: ShellDouble, member: str) -> dict[int, list[Any]]:
    """Probes of ``member`` go unanswered until it fails (fall=2); the messages of the ticks from then on."""
    sent: dict[int, list[Any]] = {}
    for now in (11.1, 12.2, 13.3):
        for dpid, msgs in probe_tick(lb, now, down=[member], dpids=DPIDS).items():
            sent.setdefault(dpid, []).extend(msgs)
    assert lb.health.prober.health("web", member) == "failed"
    return sent


def deletes(msgs: list[Any]) -> list[tuple[int, CookieKind, int]]:
    """(table, cookie kind, endpoint id) of every exact-cookie flow delete among ``msgs``."""
    return [
        (m.table_id, Cookie.decode(m.cookie).kind, Cookie.decode(m.cookie).endpoint_id)
        for m in msgs
        if type(m).__name__ == "OFPFlowMod" and m.command == ofp.OFPFC_DELETE and m.cookie_mask == EXACT
    ]


def owner(lb: ShellDouble, client: str = "10.0.0.1") -> str:
    """The member the client's session names."""
    [session] = [s for s in lb.sessions.sessions.values() if s.client == client]
    return session.member


def test_a_failed_members_sessions_and_per_session_flows_go_at_once() -> None:
    lb = ShellDouble(config(granularity="session"))
    healthy(lb)
    punt_syn(lb, now=10.5)
    member = owner(lb)
    [session_key] = lb.sessions.sessions
    endpoint = lb.config.vip("web").member(member).endpoint_id
    sent = fail(lb, member)
    for dpid in DPIDS:
        assert deletes(sent[dpid]) == [
            (Table.CONNECTIONS, CookieKind.SESSION, endpoint),
            (Table.REVERSE, CookieKind.SESSION, endpoint),
        ], "a session's flow pair is deleted in every switch by its exact cookie"
    assert DamOp.delete(session_key) in lb.dam_ops
    assert not lb.sessions.sessions and lb.stats()["sessions"]["session_flows"] == 0
    assert lb.stats()["sessions"]["affinity"]["revoked_failed"] == 1
    punt_syn(lb, port=40001, now=13.4)
    assert owner(lb) != member, "the client's next connection is chosen again"
    later = probe_tick(lb, 14.4, down=[member], dpids=DPIDS)
    assert not any(deletes(msgs) for msgs in later.values()), "revoked once, not at every tick"


def test_switch_dispatch_failure_deletes_learned_client_and_connection_entries_after_the_group_moved() -> None:
    lb = ShellDouble(config(dispatch="switch"))
    healthy(lb)
    lb.dispatch_updates(10.0, DPIDS)
    vip = lb.config.vip("web")
    h2 = vip.member("h2")
    lb.ctx.affinity.learned(lb.ctx.vips.by_name("web"), h2, {"ipv4_src": "10.0.0.1"}, 10.5, Out())
    sent = fail(lb, "h2")[1]
    cookie = make_cookie(CookieKind.SESSION, lb.lbu_id, 1, h2.endpoint_id)
    assert deletes(sent) == [
        (Table.SWITCH_CONNECTIONS, CookieKind.SESSION, h2.endpoint_id),
        (Table.SWITCH_REVERSE, CookieKind.SESSION, h2.endpoint_id),
        (Table.SWITCH_CONNECTIONS, CookieKind.NAT, h2.endpoint_id),
        (Table.SWITCH_REVERSE, CookieKind.NAT, h2.endpoint_id),
    ]
    groups = [i for i, m in enumerate(sent) if type(m).__name__ == "OFPGroupMod"]
    first_delete = next(i for i, m in enumerate(sent) if getattr(m, "cookie", None) == cookie)
    assert groups and groups[-1] < first_delete, "the group drops the member before its pins go"
    assert h2.endpoint_id not in lb.switching.slots["web"]
    assert not lb.sessions.sessions
    lb.ctx.affinity.learned(lb.ctx.vips.by_name("web"), h2, {"ipv4_src": "10.0.0.1"}, 13.5, Out())
    assert not lb.sessions.sessions, "a late flow stats reply does not pin the client to the failed member again"


def test_inactive_member_loses_sessions_and_client_pins_but_keeps_its_connections() -> None:
    lb = ShellDouble(config(health="static", dispatch="switch"))
    h1 = lb.config.vip("web").member("h1")
    lb.ctx.affinity.learned(lb.ctx.vips.by_name("web"), h1, {"ipv4_src": "10.0.0.1"}, 1.0, Out())
    changes = lb.apply_config(config(health="static", dispatch="switch", states={"h1": "inactive"}), DPIDS, 2.0)
    assert deletes(changes[1]) == [
        (Table.SWITCH_CONNECTIONS, CookieKind.SESSION, h1.endpoint_id),
        (Table.SWITCH_REVERSE, CookieKind.SESSION, h1.endpoint_id),
    ], "per-connection entries stay: inactive leaves established connections alone"
    assert not lb.sessions.sessions
    assert lb.stats()["sessions"]["affinity"]["revoked_inactive"] == 1


def test_draining_keeps_sessions_unless_the_vip_says_otherwise() -> None:
    lb = ShellDouble(config(health="static"))
    punt_syn(lb)
    member = owner(lb)
    changes = lb.apply_config(config(health="static", states={member: "draining"}), DPIDS, 2.0)
    assert lb.sessions.sessions and changes == {1: [], 2: []}
    lb.apply_config(config(health="static", states={member: "draining"}, draining_keeps_sessions=False), DPIDS, 3.0)
    assert not lb.sessions.sessions


def test_removed_member_and_removed_vip_lose_their_sessions() -> None:
    lb = ShellDouble(config(health="static"))
    for index in range(20):
        punt_syn(lb, f"10.0.1.{index}")
    member = owner(lb, "10.0.1.0")
    data = lb.config.model_dump()
    data["vips"][0]["members"] = [m for m in data["vips"][0]["members"] if m["name"] != member]
    lb.apply_config(parse_config(data), DPIDS, 2.0)
    assert {s.member for s in lb.sessions.sessions.values()} <= {"h1", "h2", "h3"} - {member}
    assert lb.stats()["sessions"]["affinity"]["revoked_removed"] == 1
    data["vips"] = []
    lb.apply_config(parse_config(data), DPIDS, 3.0)
    assert not lb.sessions.sessions
