"""Per-member counts of ``switch_tracking: counters`` VIPs (nlb_sdn/core/ctcounts.py) and the config option."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from nlb_sdn.config import Vip
from nlb_sdn.core.ctcounts import MemberCounts
from nlb_sdn.flows.pipeline import CookieKind, Priority, Table, make_cookie

EP, OTHER_EP = 0x0A000001, 0x0A000002
VIP_A, VIP_B = 3, 4


def select(vip_id: int, endpoint: int, packets: int) -> tuple[int, int, int, int]:
    """A table 6 commit entry's flow-stats row."""
    return (Table.SWITCH_SELECT, Priority.CONNECTION, make_cookie(CookieKind.BASE, 1, vip_id, endpoint), packets)


def end(endpoint: int, packets: int) -> tuple[int, int, int, int]:
    """A member's table 8 FIN (or RST) entry's flow-stats row."""
    return (Table.CT_FORWARD, Priority.CT_END, make_cookie(CookieKind.BASE, 1, 0, endpoint), packets)


def forward(endpoint: int, packets: int) -> tuple[int, int, int, int]:
    """A member's table 8 forwarding entry's flow-stats row."""
    return (Table.CT_FORWARD, Priority.CONNECTION, make_cookie(CookieKind.BASE, 1, 0, endpoint), packets)


def test_live_is_started_minus_ended() -> None:
    counts = MemberCounts()
    counts.observe(1, [select(VIP_A, EP, 10), end(EP, 3), end(EP, 1), forward(EP, 50)], 1.0)
    assert counts.live(VIP_A, EP, 15) == 6
    assert counts.live(VIP_A, OTHER_EP, 15) == 0


def test_switches_add_up_and_a_later_read_replaces_the_earlier() -> None:
    counts = MemberCounts()
    counts.observe(1, [select(VIP_A, EP, 10), forward(EP, 1)], 1.0)
    counts.observe(2, [select(VIP_A, EP, 5), end(EP, 2)], 1.0)
    assert counts.live(VIP_A, EP, 15) == 13
    counts.observe(1, [select(VIP_A, EP, 12), end(EP, 12), forward(EP, 2)], 2.0)
    assert counts.live(VIP_A, EP, 15) == 3
    counts.forget(2)
    assert counts.live(VIP_A, EP, 15) == 0


def test_a_member_of_two_vips_shares_its_estimate_by_what_each_started() -> None:
    counts = MemberCounts()
    counts.observe(1, [select(VIP_A, EP, 30), select(VIP_B, EP, 10), end(EP, 20)], 1.0)
    assert (counts.live(VIP_A, EP, 15), counts.live(VIP_B, EP, 15)) == (15, 5)


def test_a_member_whose_entries_counted_nothing_for_idle_seconds_has_no_connection() -> None:
    counts = MemberCounts()
    counts.observe(1, [select(VIP_A, EP, 4), forward(EP, 9)], 1.0)
    counts.observe(1, [select(VIP_A, EP, 4), forward(EP, 9)], 10.0)
    assert counts.live(VIP_A, EP, 15) == 4
    counts.observe(1, [select(VIP_A, EP, 4), forward(EP, 9)], 16.0)
    assert counts.live(VIP_A, EP, 15) == 0
    counts.observe(1, [select(VIP_A, EP, 4), forward(EP, 10)], 17.0)
    assert counts.live(VIP_A, EP, 15) == 4, "a packet again: in use"


def test_more_ends_than_starts_count_as_none() -> None:
    counts = MemberCounts()
    counts.observe(1, [select(VIP_A, EP, 2), end(EP, 5), forward(EP, 1)], 1.0)
    assert counts.live(VIP_A, EP, 15) == 0


def test_other_entries_are_ignored() -> None:
    counts = MemberCounts()
    nat = make_cookie(CookieKind.NAT, 1, VIP_A, EP)
    counts.observe(1, [(Table.CT_FORWARD, Priority.CT_AUDIT, nat, 7), (Table.CONNECTIONS, 200, nat, 3)], 1.0)
    assert counts.started == {} and counts.ended == {} and counts.activity == {}


def vip(**fields: object) -> Vip:
    """A switch-dispatched VIP with these fields."""
    return Vip.model_validate({"name": "web", "address": "10.0.0.100", "port": 80, "dispatch": "switch", **fields})


def test_switch_tracking_is_an_option_with_two_values() -> None:
    assert vip(switch_tracking="counters").switch_tracking == "counters"
    assert vip(switch_tracking="copies").switch_tracking == "copies"
    with pytest.raises(ValidationError, match="switch_tracking"):
        vip(switch_tracking="sampled")


def test_tables_read_in_separate_replies_keep_each_others_counts() -> None:
    counts = MemberCounts()
    for now in (1.0, 2.0, 3.0):
        counts.observe(1, [select(VIP_A, EP, 5)], now)
        counts.observe(1, [end(EP, 1), forward(EP, 40)], now)
        counts.observe(1, [], now)  # the reply for table 4 holds neither
    assert counts.live(VIP_A, EP, 15) == 4
    counts.observe(1, [select(VIP_A, EP, 5)], 20.0)
    counts.observe(1, [end(EP, 1), forward(EP, 40)], 20.0)
    assert counts.live(VIP_A, EP, 15) == 0, "nothing counted since 1.0: quiet"
