"""Sessions follow health (SPEC §2.4, §2.5 host failure, row 40): a member that loses its sessions loses its pins.

A member that fails, turns inactive or is removed stops being *session-eligible* (draining keeps its sessions while
``draining_keeps_sessions`` holds). Its client sessions and application sessions are then dropped here and in the
DAM, and every switch loses the entries that would still carry a client's next connection to it, so that connection
is chosen again at once:

- controller dispatch with ``granularity: session``: the per-session flow pairs (tables 1 and 2, SESSION cookies);
- switch dispatch with learn pinning: the per-client entries the switch learned (tables 4 and 5, SESSION cookies)
  and, when the member failed, the per-connection ones too (NAT cookies): a client that reuses a port of a
  connection the dead member never closed would otherwise ride that connection's entry to it.

The select groups drop the member first (``SwitchDispatchManager.group_updates``), so a SYN that misses the deleted
entries is dispatched again among the members left. Established connections of an inactive or removed member that
are pinned per connection are left alone, as the directive says; a failed member's are dead anyway.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Any

from nlb_sdn.config import Member, Vip
from nlb_sdn.config.diff import member_diff
from nlb_sdn.core.context import CoreContext
from nlb_sdn.core.effects import Out
from nlb_sdn.core.manager import Manager
from nlb_sdn.core.model import Affinity, Dispatch, Granularity, Pinning, VipState
from nlb_sdn.core.vips import Change, VipChange
from nlb_sdn.flows.builders import flow_delete
from nlb_sdn.flows.pipeline import CookieKind, Table, make_cookie

EXACT_COOKIE = (1 << 64) - 1
"""A cookie mask that matches kind, LBU id, VIP service id and endpoint id: one member's entries of one kind."""
OPERATOR_REASONS = ("target ", "weight 0")
"""Prefixes of ``Candidate.reason`` that are an operator's or host's decision, not a failure."""


class Revocation(StrEnum):
    """Why a member's sessions and pinned entries are revoked."""

    FAILED = "failed"
    """Its health failed, its host is gone, or it cannot be reached: its connections are gone too."""
    INACTIVE = "inactive"
    """Its target (or the operator's weight) takes it out: sessions go, established connections stay."""
    REMOVED = "removed"
    """It left the config (or its VIP service did)."""


def pinned_entry_deletes(lbu_id: int, state: VipState, member: Member, reason: Revocation) -> list[Any]:
    """Deletes, by exact cookie, of the entries that would carry a client's next connection to ``member``."""
    kinds: list[CookieKind] = []
    tables: tuple[Table, ...] = ()
    if state.dispatch == Dispatch.CONTROLLER and Granularity(state.vip.granularity) == Granularity.SESSION:
        tables = (Table.CONNECTIONS, Table.REVERSE)
        kinds.append(CookieKind.SESSION)
    elif state.dispatch == Dispatch.SWITCH and state.pinning != Pinning.CONNTRACK:
        tables = (Table.SWITCH_CONNECTIONS, Table.SWITCH_REVERSE)
        kinds += [CookieKind.SESSION] if state.affinity == Affinity.CLIENT_IP else []
        kinds += [CookieKind.NAT] if reason == Revocation.FAILED else []
    return [
        flow_delete(table, make_cookie(kind, lbu_id, state.vip_id, member.endpoint_id), EXACT_COOKIE)
        for kind in kinds
        for table in tables
    ]


class SessionRevoker(Manager):
    """Revokes the sessions and pinned switch entries of members that are no longer session-eligible."""

    def __init__(self, ctx: CoreContext) -> None:
        self.ctx = ctx

    def reason(self, vip: Vip, member: Member) -> Revocation | None:
        """Why ``member``'s sessions must go now, or None while it may keep them."""
        health = self.ctx.health
        has_mac = self.ctx.fabric.has_mac
        if health.session_eligible(vip, member, has_mac):
            return None
        candidate = health.candidate(vip, member, has_mac)
        return Revocation.INACTIVE if candidate.reason.startswith(OPERATOR_REASONS) else Revocation.FAILED

    def health_changed(self, dpids: Iterable[int], out: Out) -> None:
        """Revoke the members whose health or target changed since the last call and who lost session eligibility."""
        revoked: dict[str, tuple[VipState, list[tuple[Member, Revocation]]]] = {}
        for vip, member in self.ctx.health.take_reassessed():
            state = self.ctx.vips.by_name(vip.name)
            current = state.member_by_endpoint(member.endpoint_id) if state is not None else None
            if state is None or current is None or current.name != member.name:
                continue  # gone from the config: its config change revoked it
            reason = self.reason(state.vip, current)
            if reason is not None:
                revoked.setdefault(vip.name, (state, []))[1].append((current, reason))
        for state, members in revoked.values():
            self.revoke(state, members, dpids, out)

    def config_changed(self, changes: list[VipChange], dpids: Iterable[int], out: Out) -> None:
        """Revoke the members a config change removed or took out (a removed VIP service loses all its sessions)."""
        for change in changes:
            if change.change == Change.REMOVED:
                self.ctx.affinity.revoke(change.state.vip.name, None, out)
                continue
            old, new = change.old, change.state.vip
            if old is None:
                continue
            diff = member_diff(old, new)
            if diff.same:
                continue
            kept_sessions = old.draining_keeps_sessions == new.draining_keeps_sessions
            if kept_sessions:  # only the members the change removed or changed can lose anything
                touched = diff.touched
                members = [member for member in old.members if member.name in touched] if touched else []
                current = {member.name: member for _was, member in diff.changed}
            else:
                members, current = old.members, {member.name: member for member in new.members}
            self.revoke(change.state, self._revoked(new, members, current, kept_sessions), dpids, out)

    def _revoked(
        self, new: Vip, members: list[Member], current: dict[str, Member], kept_sessions: bool
    ) -> list[tuple[Member, Revocation]]:
        """Which of the old pool's ``members`` lose their sessions, and why; ``current``: their new models by name."""
        revoked: list[tuple[Member, Revocation]] = []
        for member in members:
            now = current.get(member.name)
            if now is None or now.endpoint_id != member.endpoint_id:
                revoked.append((member, Revocation.REMOVED))
            elif (now != member or not kept_sessions) and (reason := self.reason(new, now)) is not None:
                revoked.append((now, reason))
        return revoked

    def revoke(self, state: VipState, members: list[tuple[Member, Revocation]], dpids: Iterable[int], out: Out) -> None:
        """Drop these members' sessions (here and in the DAM) and delete their pinned entries in every switch."""
        if not members:
            return
        self.ctx.affinity.revoke(state.vip.name, {member.name for member, _reason in members}, out)
        deletes: list[Any] = []
        for member, reason in members:
            self.ctx.counters.affinity[f"revoked_{reason.value}"] += 1
            deletes += pinned_entry_deletes(self.ctx.lbu_id, state, member, reason)
        out.send_all(dpids, deletes)
