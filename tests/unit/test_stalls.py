"""No stalls: a config change and the first H&L sync visit each member a bounded number of times (issue 12 item 6).

Not timed: each test counts how often members are visited (or entries built) at N and 2N members and asserts the
count grows linearly, so a quadratic step fails however fast the machine is.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

import pytest

from benchmarks.health import KEY, READY_AT, START, SYNC_AT, Agent, config_data, sync_datagrams
from benchmarks.stalls import change_config_data
from nlb_sdn.config import Config, Member, endpoint_id, parse_config
from nlb_sdn.core.balancer import LoadBalancer
from nlb_sdn.core.conntrack import SharedFlows
from nlb_sdn.flows import dispatch
from nlb_sdn.flows.pipeline import Table
from nlb_sdn.framework import ofproto_v1_3 as ofp
from nlb_sdn.health.allotment import largest_remainder

SLACK = 50
"""Visits allowed beyond exact doubling (a few whole passes over a tiny config)."""


class CountingList(list[Member]):
    """A VIP's member list that counts every element any loop over it visits."""

    visits = 0

    def __iter__(self) -> Iterator[Member]:
        for member in super().__iter__():
            CountingList.visits += 1
            yield member


def count_visits(*configs: Config) -> None:
    """Make every loop over these configs' member lists count its visits (the models are not copied)."""
    for config in configs:
        for vip in config.vips:
            object.__setattr__(vip, "members", CountingList(vip.members))


def visits_of(run: Any, size: int) -> int:
    """Member visits of ``run(size)`` (which calls ``count_visits`` on what it wants counted)."""
    CountingList.visits = 0
    run(size)
    return CountingList.visits


def assert_linear(run: Any, size: int) -> None:
    """Visits for 2N are at most twice those for N, plus a little."""
    small, large = visits_of(run, size), visits_of(run, 2 * size)
    assert large <= 2 * small + SLACK, f"{small} visits for {size} members, {large} for {2 * size}: not linear"


def weight_change(members: int, dispatch_mode: str = "controller") -> tuple[LoadBalancer, Config]:
    """A controller holding one VIP of ``members`` members, and the config with one weight changed."""
    lb = LoadBalancer(parse_config(change_config_data(members, dispatch_mode, 1)))
    return lb, parse_config(change_config_data(members, dispatch_mode, 5))


@pytest.mark.parametrize("dispatch_mode", ["controller", "switch"])
def test_a_weight_change_visits_members_linearly(dispatch_mode):
    def run(size: int) -> None:
        lb, changed = weight_change(size, dispatch_mode)
        count_visits(lb.config, changed)
        lb.apply_config(changed, dpids=[1, 2], now=1.0)

    assert_linear(run, 150)


def test_a_state_change_of_agent_members_is_linear_and_still_relayed():
    def configs(size: int) -> tuple[Config, Config]:
        data = config_data(size, size, fabric_hosts=False)
        first = parse_config(data)
        data["vips"][0]["members"][size // 2]["state"] = "draining"
        return first, parse_config(data)

    relayed: list[Any] = []

    def run(size: int) -> None:
        first, changed = configs(size)
        lb = LoadBalancer(first, KEY, START)
        for addr, data in sync_datagrams([Agent(i, first.vips[0].address) for i in range(size)], SYNC_AT):
            lb.handle_datagram(data, addr, SYNC_AT)
        count_visits(first, changed)
        relayed.append(lb.apply_config(changed, dpids=[], now=READY_AT).datagrams)

    assert_linear(run, 150)
    assert [len(datagrams) for datagrams in relayed] == [1, 1]  # set_target_state to the drained member's agent


@pytest.mark.parametrize("members_per_vip", [10, 0])
def test_the_first_hl_sync_visits_members_linearly(members_per_vip):
    def run(size: int) -> None:
        per = members_per_vip or size
        config = parse_config(config_data(size, per, fabric_hosts=False))
        lb = LoadBalancer(config, KEY, START)
        agents = [Agent(i, config.vips[i // per].address) for i in range(size)]
        datagrams = sync_datagrams(agents, SYNC_AT)
        count_visits(config)
        for addr, data in datagrams:
            lb.handle_datagram(data, addr, SYNC_AT)
        assert len(lb.health.cache.hosts) == size

    assert_linear(run, 100)


def test_health_flips_with_a_live_allotment_recheck_only_the_flipped_member():
    def run(size: int) -> None:
        config = parse_config(config_data(size, size, fabric_hosts=False))
        lb = LoadBalancer(config, KEY, START)
        agents = [Agent(i, config.vips[0].address) for i in range(size)]
        for addr, data in sync_datagrams(agents, SYNC_AT):
            lb.handle_datagram(data, addr, SYNC_AT)
        vip, has_mac = config.vips[0], lb.ctx.fabric.has_mac
        assert lb.health.pick(vip, has_mac, READY_AT) is not None
        flips = [(agent.addr, agent.change(READY_AT, health="failed")) for agent in agents if agent.row.health == "ok"]
        count_visits(config)
        for addr, data in flips:
            lb.handle_datagram(data, addr, READY_AT)
        spender = lb.health.spenders[vip.name]
        assert spender.allotment is not None and not set(spender.tokens_left) - spender.counters.keys()

    assert_linear(run, 100)


def test_a_flipped_member_is_revoked_and_a_recovered_one_reissues_the_allotment():
    config = parse_config(config_data(20, 20, fabric_hosts=False))
    lb = LoadBalancer(config, KEY, START)
    agents = [Agent(i, config.vips[0].address) for i in range(20)]
    for addr, data in sync_datagrams(agents, SYNC_AT):
        lb.handle_datagram(data, addr, SYNC_AT)
    vip, has_mac, health = config.vips[0], lb.ctx.fabric.has_mac, lb.health
    health.pick(vip, has_mac, READY_AT)
    lb.handle_datagram(agents[0].change(READY_AT, health="failed"), agents[0].addr, READY_AT)
    assert health.spenders[vip.name].allotment is not None
    assert health.spenders[vip.name].tokens_left.get("m00000", 0) == 0
    lb.handle_datagram(agents[0].change(READY_AT, health="ok"), agents[0].addr, READY_AT)
    assert vip.name not in health.spenders  # re-computed at the next new connection, with m00000 in it


def test_a_switch_dispatch_weight_change_builds_no_per_member_entries(monkeypatch):
    built: list[int] = []
    original = dispatch.ct_shared_flows

    def spy(lbu_id: int, targets: list[dispatch.SwitchTarget]) -> list[Any]:
        built.append(len(targets))
        return original(lbu_id, targets)

    monkeypatch.setattr(dispatch, "ct_shared_flows", spy)
    sent = []
    for size in (40, 80):
        lb, changed = weight_change(size, "switch")
        built.clear()
        effects = lb.apply_config(changed, dpids=[1, 2], now=1.0)
        assert sum(built) == 0, "the shared conntrack entries of unchanged members were rebuilt"
        sent.append(len(effects.messages[1]))
    assert sent[0] == sent[1], f"{sent} messages for 40 and 80 members: per-member entries were re-sent"


def test_a_switch_dispatch_member_change_sends_only_that_members_entries():
    lb = LoadBalancer(parse_config(change_config_data(10, "switch", 1)))
    data = change_config_data(10, "switch", 1)
    gone = data["vips"][0]["members"].pop(3)
    data["vips"][0]["members"][0]["mac"] = "02:00:00:00:aa:aa"
    effects = lb.apply_config(parse_config(data), dpids=[1], now=1.0)
    table_6 = [m for m in effects.messages[1] if getattr(m, "table_id", None) == Table.SWITCH_SELECT]
    deleted = [dict(m.match.items())["reg0"] for m in table_6 if m.command == ofp.OFPFC_DELETE_STRICT]
    added = [dict(m.match.items())["reg0"] for m in table_6 if m.command == ofp.OFPFC_ADD]
    assert deleted == [endpoint_id(gone["address"], gone["port"])]  # its conntrack entries retire, as before
    assert added == [lb.config.vips[0].members[0].endpoint_id]


def test_shared_flows_diff_builds_only_members_that_differ():
    targets = {i: dispatch.SwitchTarget(i, f"10.0.1.{i}", 80, f"02:00:00:00:00:{i:02x}") for i in range(1, 6)}
    before = SharedFlows(1, dict(targets))
    after = dict(targets)
    del after[2]
    after[9] = dispatch.SwitchTarget(9, "10.0.1.9", 80, "02:00:00:00:00:09")
    adds, deletes = SharedFlows(1, after).changes_from(before)
    per_member = len(dispatch.ct_shared_flows(1, [targets[1]]))
    assert len(adds) == len(deletes) == per_member
    assert all(dict(msg.match.items()).get("ct_mark", 9) == 9 for msg in adds)
    assert list(SharedFlows(1, after)) and SharedFlows(1, {}).changes_from(SharedFlows(1, {})) == ([], [])


def fraction_shares(weights: dict[str, float], total: int) -> dict[str, int]:
    """The reference: largest remainder over exact Fractions, ties by name."""
    exact = {name: Fraction(w) if w > 0 and math.isfinite(w) else Fraction(0) for name, w in weights.items()}
    whole = sum(exact.values(), Fraction(0))
    if whole == 0:
        return {name: 0 for name in sorted(weights)}
    quotas = {name: total * w / whole for name, w in exact.items()}
    shares = {name: math.floor(q) for name, q in quotas.items()}
    ranked = sorted((n for n in quotas if exact[n] > 0), key=lambda n: (shares[n] - quotas[n], n))
    for name in ranked[: total - sum(shares.values())]:
        shares[name] += 1
    return dict(sorted(shares.items()))


def test_largest_remainder_in_integers_matches_exact_fractions():
    pick = random.Random(12)
    values = [0.0, 1.0, 2.0, 1 / 3, 1e-300, 1e300, -1.0, math.inf, math.nan, 0.1, 250.0]
    for _ in range(2000):
        weights = {f"m{i}": pick.choice([*values, pick.uniform(0, 400)]) for i in range(pick.randint(0, 25))}
        total = pick.choice([0, 1, 7, 64, 100, 100_000])
        assert largest_remainder(weights, total) == fraction_shares(weights, total), (weights, total)
