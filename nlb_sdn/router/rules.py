"""Routing decisions of an L7 VIP service: whether a request matches a rule, and the first-match-wins choice.

The rule models (pools, rules, matches) are the VIP schema in :mod:`nlb_sdn.config.routing`; this module applies
them to parsed requests. :func:`choose` is pure: the caller passes the session lookup.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from nlb_sdn.config.routing import Match, Pool, RouteRule
from nlb_sdn.router.parse import ClientHello, HttpRequest

SessionLookup = Callable[[str, str], str | None]
"""``lookup(session_type, session_id)``: the member name of a live, session-eligible session, or None."""


def host_matches(pattern: str, host: str) -> bool:
    """Whether ``host`` is ``pattern``, or for ``*.example.com`` any name below ``example.com``."""
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return host == pattern


def matches(match: Match, request: HttpRequest | ClientHello) -> bool:
    """Whether every condition of ``match`` holds for ``request``."""
    if isinstance(request, ClientHello):
        if match.uses("http"):
            return False
        if match.sni is not None and (request.sni is None or not host_matches(match.sni, request.sni)):
            return False
        return match.tls_session_id is None or match.tls_session_id == bool(request.session_id)
    if match.uses("tls"):
        return False
    if match.host is not None and not host_matches(match.host, request.host):
        return False
    if match.path_prefix is not None and not request.path.startswith(match.path_prefix):
        return False
    if match.header is not None:
        values = request.headers.get_all(match.header.name)
        if not values or (match.header.value is not None and match.header.value not in values):
            return False
    if match.cookie is not None:
        cookie = request.cookies.get(match.cookie.name)
        if cookie is None or (match.cookie.value is not None and cookie != match.cookie.value):
            return False
    return True


@dataclass(frozen=True, slots=True)
class Decision:
    """Where a request goes: the pool (None: every member), the rule index, why, and a pinned member if any.

    ``reason`` is ``rule`` (a content rule matched), ``cookie`` or ``tls_session_id`` (a pin found the client's
    session: ``member`` is set), or ``default`` (no rule decided: the allotment picks among all members).
    """

    pool: str | None
    rule: int | None
    reason: Literal["rule", "cookie", "tls_session_id", "default"]
    member: str | None = None


DEFAULT = Decision(None, None, "default")


def choose(
    request: HttpRequest | ClientHello,
    rules: Sequence[RouteRule],
    pools: Sequence[Pool],
    lookup: SessionLookup | None = None,
) -> Decision:
    """The first rule that decides for ``request``; a pin decides only when its session names a member of its pool."""
    for index, rule in enumerate(rules):
        if not matches(rule.match, request):
            continue
        if rule.pin is None:
            return Decision(rule.pool, index, "rule")
        member = _pinned_member(request, rule, pools, lookup)
        if member is not None:
            return Decision(rule.pool, index, rule.pin, member)
    return DEFAULT


def _pinned_member(
    request: HttpRequest | ClientHello, rule: RouteRule, pools: Sequence[Pool], lookup: SessionLookup | None
) -> str | None:
    """The member the session of a pin rule names, if it is live and in the rule's pool."""
    if lookup is None:
        return None
    if isinstance(request, ClientHello):
        sid = request.session_id.hex()
    else:
        assert rule.match.cookie is not None
        sid = request.cookies.get(rule.match.cookie.name, "")
    if not sid:
        return None
    member = lookup(rule.lookup_type, sid)
    if member is None or rule.pool is None:
        return member
    pool = next((p for p in pools if p.name == rule.pool), None)
    return member if pool is not None and member in pool.members else None
