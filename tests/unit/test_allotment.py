"""Allotments (FIG. 18): the default formula, largest-remainder rounding and the spender."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, strategies as st

from nlb_sdn.health.allotment import (
    Allotment,
    AllotmentSpender,
    Candidate,
    Service,
    compute_allotment,
    largest_remainder,
)

SERVICE = Service("10.0.0.100", 80, "tcp", "")


def cand(name: str, capacity: float = 100.0, load: float = 0.0, eligible: bool = True, reason: str = "") -> Candidate:
    """A candidate at a made-up endpoint."""
    return Candidate(name, f"10.0.1.{ord(name[-1]) % 250}", 8080, capacity, load, eligible, reason)


def three(scheme: str = "percent", tokens: int = 100, now: float = 0.0) -> Allotment:
    """The 40/35/25 allotment of the examples."""
    return compute_allotment(
        SERVICE, [cand("a", 40), cand("b", 35), cand("c", 25)], scheme=scheme, tokens=tokens, now=now
    )


names = st.text(alphabet="abcdefgh", min_size=1, max_size=3)
numbers = st.floats(min_value=0, max_value=1e6, allow_nan=False)
candidates = st.dictionaries(names, st.tuples(numbers, numbers, st.booleans()), min_size=1, max_size=8).map(
    lambda d: [Candidate(n, "10.0.0.1", 1000 + i, cap, load, ok) for i, (n, (cap, load, ok)) in enumerate(d.items())]
)


@given(st.dictionaries(names, numbers, max_size=10), st.integers(min_value=0, max_value=1000))
def test_largest_remainder_sums_exactly(weights: dict[str, float], total: int) -> None:
    shares = largest_remainder(weights, total)
    assert set(shares) == set(weights)
    assert all(v >= 0 for v in shares.values())
    assert all(shares[n] == 0 for n, w in weights.items() if w == 0)
    assert sum(shares.values()) == (total if any(w > 0 for w in weights.values()) else 0)
    whole = sum(weights.values())
    for name, w in weights.items():
        if whole:
            assert abs(shares[name] - total * w / whole) < 1 + 1e-9


def test_largest_remainder_ties_by_name() -> None:
    assert largest_remainder({"b": 1, "a": 1, "c": 1}, 100) == {"a": 34, "b": 33, "c": 33}
    assert largest_remainder({"x": 1, "y": 1}, 1) == {"x": 1, "y": 0}


@given(candidates, st.sampled_from(["percent", "tokens"]), st.integers(min_value=1, max_value=500))
def test_shares_sum_and_skip_ineligible(cands: list[Candidate], scheme: str, tokens: int) -> None:
    allotment = compute_allotment(SERVICE, cands, scheme=scheme, tokens=tokens)
    eligible = {c.name for c in cands if c.eligible}
    assert set(allotment.values) == eligible
    assert set(allotment.excluded) == {c.name for c in cands} - eligible
    expected = (100 if scheme == "percent" else tokens) if eligible else 0
    assert sum(allotment.values.values()) == expected


@given(candidates, st.randoms(use_true_random=False))
def test_stable_under_reordering(cands: list[Candidate], rnd) -> None:
    shuffled = list(cands)
    rnd.shuffle(shuffled)
    first, second = compute_allotment(SERVICE, cands), compute_allotment(SERVICE, shuffled)
    assert first == second
    assert list(first.values) == list(second.values)


def test_capacities_without_load_are_the_shares() -> None:
    allotment = three()
    assert allotment.values == {"a": 40, "b": 35, "c": 25}
    assert three("tokens", 200).values == {"a": 80, "b": 70, "c": 50}


def test_formula_spare_capacity_then_capacity_then_one() -> None:
    spare = compute_allotment(SERVICE, [cand("a", 100, 50), cand("b", 100, 100), cand("c", 100, 150)])
    assert spare.values == {"a": 100, "b": 0, "c": 0}
    full = compute_allotment(SERVICE, [cand("a", 30, 30), cand("b", 10, 50)])
    assert full.values == {"a": 75, "b": 25}
    zero = compute_allotment(SERVICE, [cand("a", 0, 0), cand("b", 0, 5)])
    assert zero.values == {"a": 50, "b": 50}


def test_no_eligible_gives_empty_allotment() -> None:
    allotment = compute_allotment(SERVICE, [cand("a", eligible=False, reason="host failed")], generation=7, now=5.0)
    assert allotment.values == {}
    assert allotment.as_dict()["excluded"] == {"a": "host failed"}
    spender = AllotmentSpender(allotment)
    assert spender.pick(5.0) is None
    assert not spender.needs_refresh(6.0)
    assert spender.needs_refresh(7.0)


def test_as_dict_has_fig18_fields() -> None:
    view = compute_allotment(SERVICE, [cand("a", 60), cand("b", 40)], duration_ms=1500, generation=3, now=9.5).as_dict()
    assert view["scheme"] == "percent" and view["duration_ms"] == 1500 and view["generation"] == 3
    assert view["service"] == {"vip": "10.0.0.100", "vport": 80, "proto": "tcp", "proto_info": ""}
    assert view["endpoints"] == [
        {"name": "a", "endpoint": "10.0.1.97:8080", "value": 60},
        {"name": "b", "endpoint": "10.0.1.98:8080", "value": 40},
    ]
    assert view["values"] == {"a": 60, "b": 40} and view["issued_at"] == 9.5


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        compute_allotment(SERVICE, [cand("a"), cand("a")])
    with pytest.raises(ValueError):
        compute_allotment(SERVICE, [cand("a")], scheme="bogus")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        compute_allotment(SERVICE, [cand("a")], scheme="tokens", tokens=0)


def test_percent_picks_follow_shares_per_hundred() -> None:
    spender = AllotmentSpender(three())
    picks = [spender.pick(0.0) for _ in range(1000)]
    for start in range(0, 1000, 100):
        window = Counter(picks[start : start + 100])
        assert window == {"a": 40, "b": 35, "c": 25}
    running = Counter[str]()
    for i, name in enumerate(picks, 1):
        running[name] += 1
        for member, share in (("a", 40), ("b", 35), ("c", 25)):
            assert abs(running[member] - i * share / 100) <= 1
    assert spender.counters["picks"] == 1000


@given(candidates, st.integers(min_value=1, max_value=300))
def test_picks_spend_exactly_the_allotment(cands: list[Candidate], tokens: int) -> None:
    for scheme, total in (("percent", 100), ("tokens", tokens)):
        allotment = compute_allotment(SERVICE, cands, scheme=scheme, tokens=tokens)
        spender = AllotmentSpender(allotment)
        picks = Counter(spender.pick(0.0) for _ in range(total if allotment.values else 1))
        assert picks == ({n: v for n, v in allotment.values.items() if v} if allotment.values else {None: 1})
        assert spender.counters["token_overdraw"] == 0


def test_tokens_are_spent_then_overdrawn() -> None:
    spender = AllotmentSpender(three("tokens", 20))
    picks = Counter(spender.pick(0.1) for _ in range(20))
    assert picks == {"a": 8, "b": 7, "c": 5}
    assert spender.tokens_left == {"a": 0, "b": 0, "c": 0}
    assert spender.counters["token_overdraw"] == 0
    more = Counter(spender.pick(0.2) for _ in range(20))
    assert more == {"a": 8, "b": 7, "c": 5}
    assert spender.counters["token_overdraw"] == 20
    assert spender.counters["picks"] == 40


def test_refresh_on_tokens_running_low() -> None:
    spender = AllotmentSpender(three("tokens", 100, now=10.0))
    assert not spender.needs_refresh(10.5)
    for _ in range(79):
        spender.pick(10.5)
    assert not spender.needs_refresh(10.5)
    spender.pick(10.5)
    assert spender.needs_refresh(10.5)
    spender.install(three("tokens", 100, now=10.6))
    assert not spender.needs_refresh(10.6)
    assert spender.tokens_left == {"a": 40, "b": 35, "c": 25}
    assert spender.counters["refreshes"] == 1


def test_refresh_timing_on_duration() -> None:
    spender = AllotmentSpender(three(now=100.0))
    assert not spender.needs_refresh(101.7)
    assert not spender.needs_refresh(101.99)
    assert spender.needs_refresh(102.0)
    spender.pick(100.1)
    assert not spender.needs_refresh(101.59)
    assert spender.needs_refresh(101.6)
    assert spender.counters["expired_picks"] == 0
    spender.pick(102.5)
    assert spender.counters["expired_picks"] == 1


def test_no_allotment_needs_one() -> None:
    spender = AllotmentSpender()
    assert spender.needs_refresh(0.0)
    assert spender.pick(0.0) is None
    assert spender.revoke({"a"}) == set()


def test_revoke_removes_at_once() -> None:
    spender = AllotmentSpender(three(now=1.0))
    spender.pick(1.0)
    assert spender.revoke({"a", "zz"}) == {"a"}
    assert spender.counters["revocations"] == 1
    assert "a" not in {spender.pick(1.1) for _ in range(100)}
    assert spender.needs_refresh(1.1)
    allotment = spender.allotment
    assert allotment is not None and allotment.values == {"b": 35, "c": 25}
    assert allotment.excluded == {"a": "revoked"}
    assert spender.revoke({"b", "c"}) == {"b", "c"}
    assert spender.pick(1.2) is None
    assert spender.counters["revocations"] == 3


def test_revoke_with_tokens_keeps_the_rest() -> None:
    spender = AllotmentSpender(three("tokens", 10))
    spender.pick(0.0)
    spender.revoke({"b"})
    rest = Counter(spender.pick(0.0) for _ in range(20))
    assert set(rest) == {"a", "c"}
    assert spender.tokens_left == {"a": 0, "c": 0}
    assert spender.counters["token_overdraw"] > 0
