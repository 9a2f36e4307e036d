"""Routing rules of an L7 VIP service: named pools of its members, first-match rules, session pins, and the decision.

The models are part of the VIP schema (``vips[].pools``, ``vips[].rules``); :func:`check_routing` is the cross-key
check the VIP runs against its members. :func:`choose` is pure: the caller passes the session lookup.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from nlb_sdn.router.parse import DNS_LABEL, ClientHello, HttpRequest

POOL_NAME_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
TOKEN_PATTERN = r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,64}$"
SESSION_TYPE_PATTERN = r"^[a-z][a-z0-9_]{0,31}$"
HOST_MATCH_PATTERN = re.compile(rf"(\*\.)?{DNS_LABEL}(\.{DNS_LABEL})*")
MAX_MATCH_VALUE = 1024

HTTP_CONDITIONS = ("host", "path_prefix", "header", "cookie")
TLS_CONDITIONS = ("sni", "tls_session_id")
PIN_SESSION_TYPES = {"cookie": "app", "tls_session_id": "tls_session_id"}
"""The session type a pin looks up by default."""

SessionLookup = Callable[[str, str], str | None]
"""``lookup(session_type, session_id)``: the member name of a live, session-eligible session, or None."""


class _Strict(BaseModel):
    """Base model: unknown keys are rejected, values are validated on assignment too (as in ``nlb_sdn.config``)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _printable(value: str | None) -> str | None:
    """Reject a value that no request could carry (control characters, over MAX_MATCH_VALUE characters)."""
    if value is not None and (len(value) > MAX_MATCH_VALUE or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value)):
        raise ValueError(f"must be at most {MAX_MATCH_VALUE} characters without control characters")
    return value


def _host_match(value: str | None) -> str | None:
    """A host or SNI pattern: a DNS name or ``*.`` and a DNS name, compared lower-case."""
    if value is None:
        return None
    lowered = value.lower()
    if len(lowered) > 253 or not HOST_MATCH_PATTERN.fullmatch(lowered):
        raise ValueError(f"not a host name or *.suffix pattern: {value!r}")
    return lowered


def host_matches(pattern: str, host: str) -> bool:
    """Whether ``host`` is ``pattern``, or for ``*.example.com`` any name below ``example.com``."""
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return host == pattern


class _NamedValue(_Strict):
    """Something of the request named ``name`` that must be present, with exactly ``value`` if given."""

    name: str = Field(pattern=TOKEN_PATTERN)
    value: str | None = None

    @field_validator("value")
    @classmethod
    def _check_value(cls, value: str | None) -> str | None:
        return _printable(value)


class HeaderMatch(_NamedValue):
    """A request header that must be present, with exactly ``value`` if given (any of its values)."""


class CookieMatch(_NamedValue):
    """A cookie that must be present, with exactly ``value`` if given."""


class Match(_Strict):
    """Conditions that must all hold; no condition matches every request. HTTP and TLS conditions do not mix."""

    host: str | None = None
    path_prefix: str | None = None
    header: HeaderMatch | None = None
    cookie: CookieMatch | None = None
    sni: str | None = None
    tls_session_id: bool | None = None

    @field_validator("host", "sni")
    @classmethod
    def _check_hosts(cls, value: str | None) -> str | None:
        return _host_match(value)

    @field_validator("path_prefix")
    @classmethod
    def _check_path_prefix(cls, value: str | None) -> str | None:
        if value is not None:
            _printable(value)
            if not value.startswith("/") or any(c in value for c in " ?#"):
                raise ValueError("must start with / and contain no space, ? or #")
        return value

    @model_validator(mode="after")
    def _check(self) -> "Match":
        if self.uses("http") and self.uses("tls"):
            raise ValueError("mixes HTTP conditions (host, path_prefix, header, cookie) with TLS ones "
                             "(sni, tls_session_id)")
        return self

    def uses(self, protocol: Literal["http", "tls"]) -> bool:
        """Whether any condition of ``protocol`` is set."""
        names = HTTP_CONDITIONS if protocol == "http" else TLS_CONDITIONS
        return any(getattr(self, name) is not None for name in names)

    def matches(self, request: HttpRequest | ClientHello) -> bool:
        """Whether every condition holds for ``request``."""
        if isinstance(request, ClientHello):
            if self.uses("http"):
                return False
            if self.sni is not None and (request.sni is None or not host_matches(self.sni, request.sni)):
                return False
            return self.tls_session_id is None or self.tls_session_id == bool(request.session_id)
        if self.uses("tls"):
            return False
        if self.host is not None and not host_matches(self.host, request.host):
            return False
        if self.path_prefix is not None and not request.path.startswith(self.path_prefix):
            return False
        if self.header is not None:
            values = request.headers.get_all(self.header.name)
            if not values or (self.header.value is not None and self.header.value not in values):
                return False
        if self.cookie is not None:
            cookie = request.cookies.get(self.cookie.name)
            if cookie is None or (self.cookie.value is not None and cookie != self.cookie.value):
                return False
        return True


class Pool(_Strict):
    """A named subset of the VIP's members; rules send requests to a pool."""

    name: str = Field(pattern=POOL_NAME_PATTERN)
    members: list[str] = Field(min_length=1)

    @field_validator("members")
    @classmethod
    def _unique_members(cls, members: list[str]) -> list[str]:
        if len(set(members)) != len(members):
            raise ValueError("a member is listed twice")
        return members


class RouteRule(_Strict):
    """One rule: when ``match`` holds, send to ``pool``; a ``pin`` rule first looks up the client's session."""

    match: Match = Field(default_factory=Match)
    pool: str | None = None
    pin: Literal["cookie", "tls_session_id"] | None = None
    session_type: str | None = Field(default=None, pattern=SESSION_TYPE_PATTERN)

    @model_validator(mode="after")
    def _check(self) -> "RouteRule":
        if self.pin is None:
            if self.pool is None:
                raise ValueError("a rule without pin needs a pool")
            if self.session_type is not None:
                raise ValueError("session_type is only for pin rules")
        elif self.pin == "cookie" and (self.match.cookie is None or self.match.cookie.value is not None):
            raise ValueError("pin cookie needs match.cookie with a name and no value (the value is the session id)")
        elif self.pin == "tls_session_id" and self.match.tls_session_id is not True:
            raise ValueError("pin tls_session_id needs match.tls_session_id: true")
        return self

    @property
    def lookup_type(self) -> str:
        """The session type a pin looks up."""
        assert self.pin is not None
        return self.session_type or PIN_SESSION_TYPES[self.pin]


def check_routing(pools: Sequence[Pool], rules: Sequence[RouteRule], members: Sequence[str]) -> None:
    """Raise ValueError naming the key unless pool names are unique, pools name members and rules name pools."""
    known = set(members)
    names: set[str] = set()
    for pool in pools:
        if pool.name in names:
            raise ValueError(f"pools: duplicate pool name {pool.name!r}")
        names.add(pool.name)
        unknown = [m for m in pool.members if m not in known]
        if unknown:
            raise ValueError(f"pools[{pool.name}].members: unknown member {unknown[0]!r} (not a member of this VIP)")
    for index, rule in enumerate(rules):
        if rule.pool is not None and rule.pool not in names:
            raise ValueError(f"rules[{index}].pool: unknown pool {rule.pool!r}")


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


def choose(request: HttpRequest | ClientHello, rules: Sequence[RouteRule], pools: Sequence[Pool],
           lookup: SessionLookup | None = None) -> Decision:
    """The first rule that decides for ``request``; a pin decides only when its session names a member of its pool."""
    for index, rule in enumerate(rules):
        if not rule.match.matches(request):
            continue
        if rule.pin is None:
            return Decision(rule.pool, index, "rule")
        member = _pinned_member(request, rule, pools, lookup)
        if member is not None:
            return Decision(rule.pool, index, rule.pin, member)
    return DEFAULT


def _pinned_member(request: HttpRequest | ClientHello, rule: RouteRule, pools: Sequence[Pool],
                   lookup: SessionLookup | None) -> str | None:
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
