"""The ``controller.state`` section: where the durable operator state (VIPs, members, weights, drain states) lives."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, Field

from nlb_sdn.config.base import Strict
from nlb_sdn.dam.sentinel import check_url


class StateBackend(StrEnum):
    """Which store holds the operator state: a local file beside the config, or Redis shared by LBU instances."""

    FILE = "file"
    REDIS = "redis"


class StateSettings(Strict):
    """Where the operator state is kept; the config file seeds an empty store, and from then on the store is the truth.

    ``path`` (file backend): the state file; empty means ``<config file>.state.json``; a relative path is relative to
    the config file's directory. ``url`` and ``prefix`` (redis backend): empty ``url`` means ``controller.dam.url``;
    the state is the hash ``<prefix>state`` and its change feed the channel ``<prefix>state-changes``.
    """

    backend: StateBackend = StateBackend.FILE
    path: str = ""
    url: Annotated[str, AfterValidator(check_url)] = Field(
        default="", pattern=r"^$|^(redis|rediss|unix|redis\+sentinel)://"
    )
    prefix: str = Field(default="nlb:", pattern=r"^[A-Za-z0-9_.:-]{1,32}$")
