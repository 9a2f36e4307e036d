"""What a config reload applies: the file's ``controller`` and ``fabric`` sections over the live model, the VIPs from
the operator state's store (default) or from the file, and the settings that only a restart can change.

Pure: :func:`plan_reload` takes the live model and the freshly read file and returns the model to apply through the
one flow-diff path (``LoadBalancer.apply_config``), which keys changed and which changed keys need a restart (those
keep their live value until then).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from nlb_sdn.config import Config, dump_config, load_config, parse_config

RESTART_KEYS = (
    "controller.lbu_id",
    "controller.packet_in_max_len",
    "controller.switch_sync_period",
    "controller.rest.enabled",
    "controller.rest.host",
    "controller.rest.port",
    "controller.rest.tls",
    "controller.rest.max_connections",
    "controller.rest.header_timeout",
    "controller.rest.request_timeout",
    "controller.rest.socket_timeout",
    "controller.health.enabled",
    "controller.health.listen_host",
    "controller.health.listen_port",
    "controller.health.key_file",
    "controller.health.key_mode",
    "controller.dam",
    "controller.openflow.listen_host",
    "controller.openflow.port",
    "controller.openflow.tls",
    "controller.flood",
    "controller.state",
    "controller.ha",
)
"""Settings read once at start or at a switch's connection (listeners, keys, stores, timers, identity, the punt
meters and quotas of ``controller.flood``): a reload reports them as needing a restart and keeps their live value."""


class VipsSource(StrEnum):
    """Where a reload takes the VIPs from."""

    STORE = "store"
    """The operator state's store (the default): the file's ``vips`` stay ignored once the store was seeded."""
    FILE = "file"
    """The config file: the store is re-seeded with the file's VIPs (a new version, compare-and-set)."""


@dataclass(frozen=True)
class ReloadPlan:
    """The model a reload applies, the dotted keys it changes and the changed keys kept until a restart."""

    config: Config
    changed: tuple[str, ...]
    needs_restart: tuple[str, ...]

    def view(self, version: int, vips: VipsSource) -> dict[str, Any]:
        """The answer to a reload: the operator state's version, where the VIPs came from, what changed."""
        return {
            "version": version,
            "vips": str(vips),
            "changed": list(self.changed),
            "needs_restart": list(self.needs_restart),
        }


def _lookup(data: dict[str, Any], key: str) -> Any:
    """The value at a dotted key of plain config data."""
    node: Any = data
    for part in key.split("."):
        node = node[part]
    return node


def _replace(data: dict[str, Any], key: str, value: Any) -> None:
    """Set the value at a dotted key of plain config data."""
    *parents, last = key.split(".")
    node: Any = data
    for part in parents:
        node = node[part]
    node[last] = value


def _named(items: list[Any]) -> dict[str, Any] | None:
    """A list of mappings that all have a unique ``name``, by name; None for any other list."""
    named = {item.get("name"): item for item in items if isinstance(item, dict)}
    if len(named) != len(items) or not all(isinstance(name, str) and name for name in named):
        return None
    return {str(name): item for name, item in named.items()}


def changed_keys(before: Any, after: Any, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two plain config data (list items named ``key[name]``)."""
    if before == after:
        return []
    if isinstance(before, dict) and isinstance(after, dict):
        keys = [*before, *(key for key in after if key not in before)]
        return [
            found
            for key in keys
            for found in changed_keys(before.get(key), after.get(key), f"{prefix}.{key}" if prefix else str(key))
        ]
    if isinstance(before, list) and isinstance(after, list):
        old, new = _named(before), _named(after)
        if old is not None and new is not None:
            names = [*old, *(name for name in new if name not in old)]
            return [f"{prefix}[{name}]" for name in names if old.get(name) != new.get(name)]
    return [prefix]


def plan_reload(live: Config, file_config: Config, vips: VipsSource = VipsSource.STORE) -> ReloadPlan:
    """The reload of ``file_config`` over the ``live`` model; ConfigError (source ``reload``) when the result does not
    validate (e.g. the store's VIPs name a host the new fabric lacks)."""
    live_data, new_data = dump_config(live), dump_config(file_config)
    if vips == VipsSource.STORE:
        new_data["vips"] = live_data["vips"]
    needs_restart = []
    for key in RESTART_KEYS:
        if _lookup(new_data, key) != _lookup(live_data, key):
            needs_restart.append(key)
            _replace(new_data, key, _lookup(live_data, key))
    config = parse_config(new_data, source="reload")
    return ReloadPlan(config, tuple(changed_keys(live_data, dump_config(config))), tuple(needs_restart))


def read_reload(path: str | os.PathLike[str], live: Config, vips: VipsSource = VipsSource.STORE) -> ReloadPlan:
    """Re-read the config file at ``path`` and plan its reload over ``live``; ConfigError (every problem, with line
    and column) when the file cannot be read or does not validate."""
    return plan_reload(live, load_config(path), vips)
