"""The routing schema of an L7 VIP service (``vips[].pools``, ``vips[].rules``): named pools, rules, their checks.

Pure data and validation: the request router (``nlb_sdn.router.rules``) matches requests against these models.
:func:`check_routing` is the cross-key check the VIP runs against its members.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

from pydantic import Field, field_validator, model_validator

from nlb_sdn.config.base import Strict

DNS_LABEL = r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?"
"""One label of a host name (lower case), as rules name hosts and as the router accepts an SNI."""
POOL_NAME_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
TOKEN_PATTERN = r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,64}$"
SESSION_TYPE_PATTERN = r"^[a-z][a-z0-9_]{0,31}$"
HOST_MATCH_PATTERN = re.compile(rf"(\*\.)?{DNS_LABEL}(\.{DNS_LABEL})*")
MAX_MATCH_VALUE = 1024

HTTP_CONDITIONS = ("host", "path_prefix", "header", "cookie")
TLS_CONDITIONS = ("sni", "tls_session_id")
PIN_SESSION_TYPES = {"cookie": "app", "tls_session_id": "tls_session_id"}
"""The session type a pin looks up by default."""


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


class _NamedValue(Strict):
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


class Match(Strict):
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
    def _check(self) -> Match:
        if self.uses("http") and self.uses("tls"):
            raise ValueError(
                "mixes HTTP conditions (host, path_prefix, header, cookie) with TLS ones (sni, tls_session_id)"
            )
        return self

    def uses(self, protocol: Literal["http", "tls"]) -> bool:
        """Whether any condition of ``protocol`` is set."""
        names = HTTP_CONDITIONS if protocol == "http" else TLS_CONDITIONS
        return any(getattr(self, name) is not None for name in names)


class Pool(Strict):
    """A named subset of the VIP's members; rules send requests to a pool."""

    name: str = Field(pattern=POOL_NAME_PATTERN)
    members: list[str] = Field(min_length=1)

    @field_validator("members")
    @classmethod
    def _unique_members(cls, members: list[str]) -> list[str]:
        if len(set(members)) != len(members):
            raise ValueError("a member is listed twice")
        return members


class RouteRule(Strict):
    """One rule: when ``match`` holds, send to ``pool``; a ``pin`` rule first looks up the client's session."""

    match: Match = Field(default_factory=Match)
    pool: str | None = None
    pin: Literal["cookie", "tls_session_id"] | None = None
    session_type: str | None = Field(default=None, pattern=SESSION_TYPE_PATTERN)

    @model_validator(mode="after")
    def _check(self) -> RouteRule:
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
