"""The VIP services in use: their ids in cookies, lookups by name, service address and id, and the config diff."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum

from nlb_sdn.config import Vip
from nlb_sdn.core.model import VipState
from nlb_sdn.flows.pipeline import MAX_VIP_ID


class Change(Enum):
    """What a config change did to one VIP service."""

    ADDED = "added"
    UPDATED = "updated"
    REMOVED = "removed"


@dataclass(frozen=True, slots=True)
class VipChange:
    """One VIP service's part of a config change: its state, and its model before (None when added)."""

    change: Change
    state: VipState
    old: Vip | None


def _service(vip: Vip) -> tuple[str, int, str]:
    """What identifies a VIP service's entries in the switches: address, port and protocol."""
    return vip.address, vip.port, vip.protocol


class VipRegistry:
    """Every configured VIP service's runtime state, found by name, by (address, port) or by cookie id."""

    def __init__(self) -> None:
        self._by_name: dict[str, VipState] = {}
        self._by_service: dict[tuple[str, int], VipState] = {}
        self._by_id: dict[int, VipState] = {}
        self._preferred: dict[str, int] = {}
        """Ids the VIP services of these names get when next added, if free (the stored ids, after a restart)."""

    def __iter__(self) -> Iterator[VipState]:
        return iter(list(self._by_name.values()))

    def by_name(self, name: str) -> VipState | None:
        """The VIP service called ``name``."""
        return self._by_name.get(name)

    def by_service(self, address: str, port: int) -> VipState | None:
        """The VIP service at ``address``:``port``."""
        return self._by_service.get((address, port))

    def by_id(self, vip_id: int) -> VipState | None:
        """The VIP service whose id a cookie carries."""
        return self._by_id.get(vip_id)

    def vip_mac(self, address: str) -> str | None:
        """The MAC of the VIP address (any of its services), if one is configured."""
        return next((state.vip.mac for state in self._by_name.values() if state.vip.address == address), None)

    def apply(self, vips: list[Vip], on_remove: Callable[[VipState], None]) -> list[VipChange]:
        """Take the configured VIP services: removed ones (or moved to another address) go first, then the rest.

        A VIP service keeps its id while it keeps its name, address, port and protocol; ``on_remove`` is called for
        each one that goes, before it is forgotten.
        """
        changes: list[VipChange] = []
        wanted = {vip.name: vip for vip in vips}
        for state in list(self._by_name.values()):
            replacement = wanted.get(state.vip.name)
            if replacement is None or _service(replacement) != _service(state.vip):
                changes.append(VipChange(Change.REMOVED, state, state.vip))
                on_remove(state)
                del self._by_name[state.vip.name]
                del self._by_service[(state.vip.address, state.vip.port)]
                del self._by_id[state.vip_id]
        for vip in vips:
            kept = self._by_name.get(vip.name)
            if kept is None:
                added = VipState(vip, self._free_id(vip.name))
                self._by_name[vip.name] = added
                self._by_service[(vip.address, vip.port)] = added
                self._by_id[added.vip_id] = added
                changes.append(VipChange(Change.ADDED, added, None))
            else:
                changes.append(VipChange(Change.UPDATED, kept, kept.vip))
                kept.vip = vip
        self._preferred = {}
        return changes

    def ids(self) -> dict[str, int]:
        """The id of every VIP service, by name."""
        return {name: state.vip_id for name, state in self._by_name.items()}

    def prefer(self, ids: dict[str, int]) -> None:
        """Give the VIP services of these names these ids if the next ``apply`` adds them, where free."""
        self._preferred = dict(ids)

    def plan(self, vips: list[Vip]) -> dict[str, int]:
        """The id each of ``vips`` will have once applied (as ``apply`` assigns them), without changing anything."""
        ids = {
            vip.name: state.vip_id
            for vip in vips
            if (state := self._by_name.get(vip.name)) is not None and _service(state.vip) == _service(vip)
        }
        for vip in vips:
            if vip.name not in ids:
                ids[vip.name] = self._free_id(vip.name, taken=set(ids.values()))
        return ids

    def _free_id(self, name: str, taken: set[int] | None = None) -> int:
        """The id preferred for ``name`` if free, else the lowest VIP service id neither in use nor preferred for
        another (ids appear in cookies); ``taken``: the ids in use instead of the live ones."""
        used = set(self._by_id) if taken is None else taken
        preferred = self._preferred.get(name)
        reserved = {vip_id for other, vip_id in self._preferred.items() if other != name}
        if preferred is not None and preferred not in used:
            return preferred
        for vip_id in range(1, MAX_VIP_ID + 1):
            if vip_id not in used and vip_id not in reserved:
                return vip_id
        raise RuntimeError("no free VIP service id")
