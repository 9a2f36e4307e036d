"""This controller's OpenFlow role toward the switches, and the gate a slave's effects pass through (docs/ha.md).

With ``controller.ha`` several controllers connect to every switch and one of them is master. A slave keeps its
model warm (config, DAM feed, H&L cache) but changes nothing: its core entry points return no OpenFlow messages and
no DAM writes (the master owns the switches and the atoms), only its H&L datagrams, which keep the agents talking to
it. Without HA the controller is ``equal`` and nothing is gated.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from enum import StrEnum
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

from nlb_sdn.core.effects import NO_EFFECTS, Effects


class Role(StrEnum):
    """The OpenFlow 1.3 controller roles this controller takes (``OFPCR_ROLE_*``)."""

    EQUAL = "equal"
    """No HA: full access, and the switch sends every packet-in (the default role of a connection)."""
    MASTER = "master"
    """Elected: full access; the switch refuses a stale generation id."""
    SLAVE = "slave"
    """A standby: read-only, no packet-ins, no flow-removed messages."""

    @property
    def may_write(self) -> bool:
        """Whether this role changes switches and atoms."""
        return self is not Role.SLAVE


def gate(effects: Effects, role: Role) -> Effects:
    """``effects`` as ``role`` may carry them out: a slave keeps only its H&L datagrams."""
    if role.may_write or not effects:
        return effects
    if not effects.datagrams:
        return NO_EFFECTS
    return Effects(datagrams=effects.datagrams)


class HasRole(Protocol):
    """What :func:`fenced` needs of its instance: the current role."""

    role: Role


P = ParamSpec("P")
S = TypeVar("S", bound=HasRole)
R = TypeVar("R")


def fenced(method: Callable[Concatenate[S, P], R]) -> Callable[Concatenate[S, P], R]:
    """Gate what a core entry point returns (its Effects, or the Effects first in a tuple) by the instance's role."""

    def wrapper(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        result = method(self, *args, **kwargs)
        if self.role.may_write:
            return result
        if isinstance(result, Effects):
            return gate(result, self.role)  # type: ignore[return-value]
        if isinstance(result, tuple) and result and isinstance(result[0], Effects):
            gated: Any = (gate(result[0], self.role), *result[1:])
            return gated  # type: ignore[no-any-return]
        return result

    functools.update_wrapper(wrapper, method)
    return wrapper
