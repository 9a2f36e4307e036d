"""Allotments (FIG. 18): per-endpoint shares of a VIP service's new connections, and the spender that uses them.

Pure: no clock, no I/O. The classifier builds ``Candidate``s from its config and the H&L cache, calls
``compute_allotment`` and hands the result to the service's ``AllotmentSpender``, which picks one endpoint per new
connection by smooth weighted round-robin and says when the allotment should be computed again.
"""

from __future__ import annotations

import heapq
import math
import operator
from dataclasses import dataclass, field, replace
from typing import Any, Literal, NamedTuple

from nlb_sdn.core.selection import SmoothWeightedRoundRobin

Scheme = Literal["percent", "tokens"]

PERCENT_TOTAL = 100
REFRESH_TOKENS_LEFT = 0.2
REFRESH_ELAPSED = 0.8


class Service(NamedTuple):
    """A VIP service, the key of an allotment request 1802."""

    vip: str
    vport: int
    proto: str = "tcp"
    proto_info: str = ""

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly view."""
        return {"vip": self.vip, "vport": self.vport, "proto": self.proto, "proto_info": self.proto_info}


@dataclass(frozen=True, slots=True)
class Candidate:
    """One configured member of a VIP service, with its load figures and whether it may take new connections."""

    name: str
    pip: str
    pport: int
    capacity: float
    load: float
    eligible: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Allotment:
    """Response 1804: shares of eligible endpoints (percent or tokens), valid for ``duration_ms`` from ``issued_at``."""

    service: Service
    scheme: Scheme
    values: dict[str, int]
    duration_ms: int
    generation: int
    issued_at: float
    endpoints: dict[str, str] = field(default_factory=dict)
    excluded: dict[str, str] = field(default_factory=dict)

    @property
    def expires_at(self) -> float:
        """When the duration timer 1810 runs out."""
        return self.issued_at + self.duration_ms / 1000.0

    @property
    def total(self) -> int:
        """The sum of the values (100 for a non-empty percent allotment, T for tokens)."""
        return sum(self.values.values())

    def as_dict(self) -> dict[str, Any]:
        """The FIG. 18 view for REST and the message log: endpoints with pip:pport and value, scheme, duration."""
        return {
            "service": self.service.as_dict(),
            "scheme": self.scheme,
            "duration_ms": self.duration_ms,
            "generation": self.generation,
            "issued_at": self.issued_at,
            "endpoints": [
                {"name": name, "endpoint": self.endpoints.get(name, ""), "value": value}
                for name, value in self.values.items()
            ],
            "values": dict(self.values),
            "excluded": dict(self.excluded),
        }


def largest_remainder(weights: dict[str, float], total: int) -> dict[str, int]:
    """Whole shares of ``total`` proportional to ``weights`` (exact sum when any weight is positive; ties by name).

    Exact, in integers: every finite float is a multiple of a power of two, so scaling all weights to the smallest
    common power-of-two denominator keeps their ratios exactly (as ``Fraction`` would, at a fraction of its cost).
    """
    if total < 0:
        raise ValueError("total must be >= 0")
    scaled = _scaled(weights)
    whole = sum(scaled.values())
    if whole == 0:
        return {name: 0 for name in sorted(weights)}
    shares: dict[str, int] = {}
    remainders: dict[str, int] = {}
    for name, weight in scaled.items():
        shares[name], remainders[name] = divmod(total * weight, whole)
    left = total - sum(shares.values())
    if left:  # the ``left`` largest remainders, ties by name (nlargest is stable): few of 20,000 get one more
        positive = sorted(name for name, weight in scaled.items() if weight > 0)
        for name in heapq.nlargest(left, positive, key=remainders.__getitem__):
            shares[name] += 1
    return {name: shares[name] for name in sorted(shares)}


def _scaled(weights: dict[str, float]) -> dict[str, int]:
    """The weights as integers in the same exact ratios (not positive or not finite: 0)."""
    if all(float(w).is_integer() for w in weights.values()):  # the common case (weights, tokens): no ratios to scale
        return {name: int(w) if w > 0 else 0 for name, w in weights.items()}
    ratios = {name: w.as_integer_ratio() if w > 0 and math.isfinite(w) else (0, 1) for name, w in weights.items()}
    denominator = max((den for _num, den in ratios.values()), default=1)
    return {name: num * (denominator // den) for name, (num, den) in ratios.items()}


def _weights(eligible: list[Candidate]) -> dict[str, float]:
    """Step 3 of the formula: spare capacity, else capacity, else 1 for every eligible candidate."""
    if all(math.isfinite(c.capacity) and math.isfinite(c.load) for c in eligible):  # no call per member
        weights = {c.name: max(0.0, c.capacity - c.load) for c in eligible}
    else:
        weights = {c.name: max(0.0, _finite(c.capacity) - _finite(c.load)) for c in eligible}
    if not any(weights.values()):
        weights = {c.name: max(0.0, _finite(c.capacity)) for c in eligible}
    if not any(weights.values()):
        weights = {c.name: 1.0 for c in eligible}
    return weights


def _finite(value: float) -> float:
    """``value``, or 0 when it is NaN or infinite (a bad report must not poison the shares)."""
    return value if math.isfinite(value) else 0.0


_name = operator.attrgetter("name")


def compute_allotment(
    service: Service | tuple[str, int, str, str],
    candidates: list[Candidate],
    scheme: Scheme = "percent",
    tokens: int = PERCENT_TOTAL,
    duration_ms: int = 2000,
    generation: int = 0,
    now: float = 0.0,
) -> Allotment:
    """The SPEC §2.11 default allotment: shares of ``max(0, capacity - load)`` over the eligible candidates."""
    if scheme not in ("percent", "tokens"):
        raise ValueError(f"unknown allotment scheme {scheme!r}")
    if len(set(map(_name, candidates))) != len(candidates):
        raise ValueError("duplicate candidate name")
    ordered = sorted(candidates, key=_name)
    eligible = [c for c in ordered if c.eligible]
    total = PERCENT_TOTAL if scheme == "percent" else tokens
    if total < 1:
        raise ValueError("tokens must be >= 1")
    shares = largest_remainder(_weights(eligible), total) if eligible else {}
    return Allotment(
        service=Service(*service),
        scheme=scheme,
        values=shares,
        duration_ms=duration_ms,
        generation=generation,
        issued_at=now,
        endpoints={c.name: f"{c.pip}:{c.pport}" for c in eligible},
        excluded={c.name: c.reason or "not eligible" for c in ordered if not c.eligible},
    )


class AllotmentSpender:
    """Spends the current allotment of one VIP service, one pick per new connection; never blocks."""

    __slots__ = ("_allotment", "_picked", "_selector", "_stale", "_tokens_left", "counters")

    def __init__(self, allotment: Allotment | None = None) -> None:
        self._allotment: Allotment | None = None
        self._selector = SmoothWeightedRoundRobin({})
        self._tokens_left: dict[str, int] = {}
        self._picked = False
        self._stale = True
        self.counters: dict[str, int] = {
            "picks": 0,
            "token_overdraw": 0,
            "expired_picks": 0,
            "refreshes": 0,
            "revocations": 0,
        }
        if allotment is not None:
            self.install(allotment)

    @property
    def allotment(self) -> Allotment | None:
        """The allotment in use, without revoked endpoints."""
        return self._allotment

    @property
    def tokens_left(self) -> dict[str, int]:
        """Tokens left per endpoint (empty for a percent allotment)."""
        return dict(self._tokens_left)

    def install(self, allotment: Allotment) -> None:
        """Start spending ``allotment``; the round-robin state of endpoints that stay is kept."""
        if self._allotment is not None:
            self.counters["refreshes"] += 1
        self._allotment = allotment
        self._tokens_left = dict(allotment.values) if allotment.scheme == "tokens" else {}
        self._selector.update(allotment.values)
        self._picked = False
        self._stale = False

    def pick(self, now: float) -> str | None:
        """The endpoint for the next new connection, or None when nothing is allotted; counts picks after expiry."""
        allotment = self._allotment
        if allotment is None or not allotment.values:
            return None
        if allotment.scheme == "tokens" and not any(self._tokens_left.values()):
            self._selector.update(allotment.values)
            self.counters["token_overdraw"] += 1
        name = self._selector.pick()
        if name is None:
            return None
        if allotment.scheme == "tokens" and self._tokens_left.get(name, 0) > 0:
            self._tokens_left[name] -= 1
            if any(self._tokens_left.values()):
                self._selector.update(self._tokens_left)
        self._picked = True
        self.counters["picks"] += 1
        if now >= allotment.expires_at:
            self.counters["expired_picks"] += 1
        return name

    def needs_refresh(self, now: float) -> bool:
        """Whether to compute a new allotment: none yet, revoked, expired, or (after a pick) nearly spent or old."""
        allotment = self._allotment
        if allotment is None or self._stale or now >= allotment.expires_at:
            return True
        if not self._picked:
            return False
        if now >= allotment.issued_at + REFRESH_ELAPSED * allotment.duration_ms / 1000.0:
            return True
        if allotment.scheme == "tokens":
            issued = sum(allotment.values.values())
            return sum(self._tokens_left.values()) <= REFRESH_TOKENS_LEFT * issued
        return False

    def revoke(self, names: set[str]) -> set[str]:
        """Stop picking ``names`` at once and mark the allotment for re-computation; returns the names removed."""
        allotment = self._allotment
        if allotment is None:
            return set()
        removed = {name for name in names if name in allotment.values}
        if not removed:
            return set()
        values = {name: v for name, v in allotment.values.items() if name not in removed}
        endpoints = {name: e for name, e in allotment.endpoints.items() if name not in removed}
        excluded = dict(allotment.excluded) | {name: "revoked" for name in sorted(removed)}
        self._allotment = replace(allotment, values=values, endpoints=endpoints, excluded=excluded)
        for name in removed:
            self._tokens_left.pop(name, None)
        if allotment.scheme == "tokens" and any(self._tokens_left.values()):
            self._selector.update(self._tokens_left)
        else:
            self._selector.update(values)
        self._stale = True
        self.counters["revocations"] += len(removed)
        return removed
