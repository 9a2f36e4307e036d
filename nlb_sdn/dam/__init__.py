"""Distributed atom manager (DAM) 2202: versioned, expiring route and session atoms over memory or Redis."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from nlb_sdn.dam.atoms import (
    KINDS,
    ROUTE_PREFIX,
    SESSION_PREFIX,
    SESSION_TYPES,
    Atom,
    BadAtomLog,
    Change,
    CorruptAtom,
    Dam,
    VersionConflict,
    any_type_session_key,
    expiry,
    kind_of,
    parse_route_key,
    route_key,
    session_key,
)
from nlb_sdn.dam.memory import MemoryDam
from nlb_sdn.dam.redis_backend import RedisDam
from nlb_sdn.dam.sentinel import URL_PATTERN, check_url

__all__ = [
    "KINDS",
    "ROUTE_PREFIX",
    "SESSION_PREFIX",
    "SESSION_TYPES",
    "Atom",
    "BadAtomLog",
    "Change",
    "CorruptAtom",
    "Dam",
    "DamConfig",
    "MemoryDam",
    "RedisDam",
    "VersionConflict",
    "any_type_session_key",
    "expiry",
    "kind_of",
    "make_dam",
    "parse_route_key",
    "route_key",
    "session_key",
]


class DamConfig(BaseModel):
    """The ``dam`` config section: which backend holds the atoms, and the atom lifetimes."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    backend: Literal["memory", "redis"] = "memory"
    url: Annotated[str, AfterValidator(check_url)] = Field(default="redis://127.0.0.1:6379/0", pattern=URL_PATTERN)
    prefix: str = Field(default="nlb:", pattern=r"^[A-Za-z0-9_.:-]{1,32}$")
    queue_limit: int = Field(default=10_000, ge=1, le=10_000_000)
    route_linger: float = Field(default=120, gt=0, le=86_400)
    session_ttl: float = Field(default=600, gt=0, le=30 * 86_400)


def make_dam(config: DamConfig) -> Dam:
    """The DAM backend named by ``config``."""
    if config.backend == "redis":
        return RedisDam(config.url, prefix=config.prefix, queue_limit=config.queue_limit)
    return MemoryDam()
