"""No handler holds the loop for long (issue 12 item 6): the work of one tick is bounded or follows what changed.

Not timed: each test counts what a call did (allotments computed, members looked at, postulates encoded), so a tick
that goes back to redoing everything fails however fast the machine is.
"""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.health import KEY, READY_AT, START, SYNC_AT, Agent, config_data, sync_datagrams
from benchmarks.stalls import change_config_data
from nlb_sdn.config import Member, parse_config
from nlb_sdn.core import icmp, watch
from nlb_sdn.core.balancer import LoadBalancer
from nlb_sdn.core.fabric import FabricView
from nlb_sdn.health import current
from nlb_sdn.health.cache import HLCache
from nlb_sdn.health.current import CurrentStates, PostulateQueue
from nlb_sdn.health.handler import HealthHandler

DPIDS = (1, 2)


def synced(hosts: int, state: str = "active", others: bool = False) -> tuple[LoadBalancer, list[Agent]]:
    """A controller whose one VIP has ``hosts`` agent members (the first one's target ``state``), all synced.

    Unless ``others``, the tick's other readers of member rows (the event log's watch, the session revoker, each
    bounded by its own test) are off, so that the counts are the current states' alone."""
    data = config_data(hosts, hosts, fabric_hosts=False)
    data["vips"][0]["members"][0]["state"] = state
    config = parse_config(data)
    lb = LoadBalancer(config, KEY, START)
    if not others:
        lb.watch.check = lambda now: None  # type: ignore[method-assign]
        lb.revoker.health_changed = lambda dpids, out: None  # type: ignore[method-assign]
    agents = [Agent(i, config.vips[0].address) for i in range(hosts)]
    for addr, datagram in sync_datagrams(agents, SYNC_AT):
        lb.handle_datagram(datagram, addr, SYNC_AT)
    return lb, agents


def count_rows_for(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count every ``HLCache.rows_for`` call (one per member looked at)."""
    calls = [0]
    original = HLCache.rows_for

    def counting(self: HLCache, *args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(HLCache, "rows_for", counting)
    return calls


def test_ticks_of_an_unchanged_switch_dispatched_vip_compute_its_allotment_once():
    lb = LoadBalancer(parse_config(change_config_data(50, "switch", 1)), now=START)
    generations = lb.health.generations
    first = generations["big"]
    for number in range(10):
        lb.tick(1.0 + number * 0.25, DPIDS)
    assert generations["big"] == first  # computed with the config, reused by every tick
    effects = lb.apply_config(parse_config(change_config_data(50, "switch", 7)), dpids=DPIDS, now=5.0)
    assert generations["big"] == first + 1 and effects.messages  # a weight change computes and sends the group
    lb.tick(5.25, DPIDS)
    assert generations["big"] == first + 1


def test_a_tick_looks_at_a_bounded_number_of_members_and_carries_the_rest(monkeypatch):
    monkeypatch.setattr(current, "REFRESH_PER_TICK", 7)
    monkeypatch.setattr(CurrentStates.refresh, "__defaults__", (7,))
    lb, _agents = synced(20)
    calls = count_rows_for(monkeypatch)
    seen = []
    for number in range(4):
        lb.tick(READY_AT + number * 0.25)
        seen.append(calls[0])
        calls[0] = 0
    assert seen == [7, 7, 6, 0]  # 20 members touched by the config and the sync: 7 a tick, then nothing to do
    assert sum(len(apps) for apps in lb.health.current.by_host.values()) == 20


def test_after_the_first_round_a_tick_looks_only_at_members_whose_rows_changed(monkeypatch):
    lb, agents = synced(30)
    for number in range(3):
        lb.tick(READY_AT + number * 0.25)
    calls = count_rows_for(monkeypatch)
    lb.handle_datagram(agents[3].change(READY_AT, target="draining"), agents[3].addr, READY_AT)
    calls[0] = 0
    lb.tick(READY_AT + 1.0)
    assert calls[0] == 1
    assert lb.health.current.by_host[agents[3].host_id][agents[3].row.app_id] == "drained"  # no live connection


def test_a_draining_member_is_looked_at_every_tick_and_turns_drained_with_its_last_connection(monkeypatch):
    lb, agents = synced(10, state="draining")
    live = {"count": 2}
    monkeypatch.setattr(lb.hl, "live", lambda vip, member: live["count"] if member == "m00000" else 0)
    lb.tick(READY_AT)
    host, app = agents[0].host_id, agents[0].row.app_id
    assert lb.health.current.by_host[host][app] == "draining"
    calls = count_rows_for(monkeypatch)
    lb.tick(READY_AT + 0.25)
    assert calls[0] == 1  # only the draining member
    live["count"] = 0
    lb.tick(READY_AT + 0.5)
    assert lb.health.current.by_host[host][app] == "drained"


def test_postulates_go_out_in_bounded_batches_until_every_warm_host_has_one(monkeypatch):
    monkeypatch.setattr(PostulateQueue.__init__, "__defaults__", (4,))
    lb, agents = synced(10)
    sent = [len(lb.tick(READY_AT + number * 0.25).datagrams) for number in range(4)]
    assert sent == [4, 4, 2, 0]  # 10 warm hosts, 4 a tick; nothing changed after that
    later = READY_AT + 5.5
    for agent in agents:
        lb.handle_datagram(agent.heartbeat(later), agent.addr, later)
    assert len(lb.tick(later).datagrams) == 4  # the next round starts after postulate_period


def test_a_postulate_queue_keeps_each_host_once_and_in_order():
    queue = PostulateQueue(batch=2)
    queue.add(["b", "a", "c"])
    queue.add(["a", "d"])
    assert [queue.take(), queue.take(), queue.take()] == [["b", "a"], ["c", "d"], []]


def test_the_member_watch_looks_at_a_bounded_number_of_members_a_tick(monkeypatch):
    monkeypatch.setattr(watch, "WATCH_PER_TICK", 50)
    monkeypatch.setattr(watch, "SWEEP_PER_TICK", 8)
    lb, agents = synced(200, others=True)
    looked = []
    original = lb.ctx.health.member_state

    def counting(*args: Any, **kwargs: Any) -> Any:
        looked.append(args[1].name)
        return original(*args, **kwargs)

    monkeypatch.setattr(lb.ctx.health, "member_state", counting)
    seen = []
    for number in range(6):
        lb.tick(READY_AT + number * 0.25)
        seen.append(len(looked))
        looked.clear()
    assert max(seen) <= 50 + 8 and seen[-1] == 8  # every member seen once in turn, then only the sweep
    assert len(lb.watch.seen) == 200
    lb.handle_datagram(agents[7].change(READY_AT, target="draining"), agents[7].addr, READY_AT)
    lb.tick(READY_AT + 2.0)
    assert "m00007" in looked and len(looked) <= 50 + 8  # the re-assessed member at once, still bounded


# A change of one member of a big VIP (issue 14 item 3): the work follows the members that changed.

BIG = 5000


def counting_calls(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> list[int]:
    """Count every call of ``owner.name`` (a method or a special method of a class)."""
    calls = [0]
    original = getattr(owner, name)

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, counting)
    return calls


def changed_pool(kind: str, members: int = BIG, dispatch: str = "switch") -> dict[str, Any]:
    """The benchmark's VIP of ``members`` after one change of ``kind``: a weight, a member added, one removed."""
    data = change_config_data(members, dispatch, 7 if kind == "weight" else 1)
    pool = data["vips"][0]["members"]
    if kind == "add":
        pool.insert(members // 2, {"name": "new", "address": "10.9.9.9", "port": 8080, "mac": "02:00:00:09:09:09"})
    elif kind == "remove":
        del pool[members // 3]
    return data


@pytest.mark.parametrize("dispatch", ["switch", "controller"])
@pytest.mark.parametrize("kind", ["weight", "add", "remove"])
def test_a_change_of_one_member_of_a_big_vip_looks_again_only_at_that_member(monkeypatch, kind, dispatch):
    candidates = counting_calls(monkeypatch, HealthHandler, "candidate")
    has_mac = counting_calls(monkeypatch, FabricView, "has_mac")
    member_eq = counting_calls(monkeypatch, Member, "__eq__")
    lb = LoadBalancer(parse_config(change_config_data(BIG, dispatch, 1)), now=START)
    lb.tick(1.0, DPIDS)
    new = parse_config(changed_pool(kind, dispatch=dispatch))
    candidates[0] = has_mac[0] = member_eq[0] = 0
    effects = lb.apply_config(new, dpids=DPIDS, now=5.0)
    lb.tick(5.25, DPIDS)
    assert candidates[0] <= 4  # was every member, for the allotment (and again for the revocation's check)
    assert has_mac[0] <= 4  # was every member, twice (candidates and switch targets)
    assert member_eq[0] <= 4  # was every member, several times (pydantic's == of the old and new VIP)
    if dispatch == "switch":
        fresh = LoadBalancer(new, now=START)
        assert lb.switching.slots == fresh.switching.slots and effects.messages  # the same group, sent at once
        assert lb.conntrack.targets() == fresh.conntrack.targets()
        assert lb.switching.targets(new.vips[0]) == fresh.switching.targets(new.vips[0])


def test_kept_candidates_are_those_computed_afresh_after_changes():
    lb = LoadBalancer(parse_config(change_config_data(200, "switch", 1)), now=START)
    health, has_mac = lb.health, lb.ctx.fabric.has_mac
    for kind in ("weight", "add", "remove"):
        new = parse_config(changed_pool(kind, 200))
        lb.apply_config(new, dpids=DPIDS, now=5.0)
        vip = new.vips[0]
        assert health.candidates(vip, has_mac) == [health.candidate(vip, m, has_mac) for m in vip.members]
        assert [
            (v.name, m.name) for v, m in health._members_at_endpoints([(m.address, m.port) for m in vip.members])
        ] == [(vip.name, m.name) for m in vip.members]


def test_candidates_are_computed_again_when_the_health_state_or_the_mac_lookup_changes():
    lb = LoadBalancer(parse_config(change_config_data(50, "controller", 1)), now=START)
    vip, health = lb.config.vips[0], lb.health
    health.candidates(vip, lb.ctx.fabric.has_mac)
    computed = health._candidates.computed
    health.candidates(vip, lb.ctx.fabric.has_mac)
    assert health._candidates.computed == computed  # kept
    assert not any(c.eligible for c in health.candidates(vip, lambda member: False))  # another lookup: afresh
    health.cache.revision += 1
    assert all(c.eligible for c in health.candidates(vip, lb.ctx.fabric.has_mac))
    assert health._candidates.computed == computed + 100


@pytest.mark.parametrize("dispatch", ["switch", "controller"])
def test_a_weight_change_of_a_big_vip_builds_no_icmp_entries_and_a_member_change_keeps_them_exact(
    monkeypatch, dispatch
):
    built = counting_calls(monkeypatch, icmp, "entries_of")
    lb = LoadBalancer(parse_config(change_config_data(BIG, dispatch, 1)), now=START)
    for dpid in DPIDS:
        lb.switch_connected(dpid, 0.5)
    lb.tick(1.0, DPIDS)
    built[0] = 0
    lb.apply_config(parse_config(changed_pool("weight", dispatch=dispatch)), dpids=DPIDS, now=5.0)
    assert built[0] == 0  # ping and error relay are on by default: was 3 entries per member, built again per switch
    removed = parse_config(changed_pool("remove", dispatch=dispatch))
    effects = lb.apply_config(removed, dpids=DPIDS, now=6.0)
    for dpid in DPIDS:
        assert lb.icmp._last[dpid][1] == icmp.vip_entries(removed, dpid)  # what a fresh computation asks for
        assert sum("icmpv4_type" in str(getattr(msg, "match", "")) for msg in effects.messages[dpid]) == 3
