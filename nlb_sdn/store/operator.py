"""One controller's view of the durable operator state: start from the store (seeding it from the config file), commit
REST changes to it before they are applied, and follow the versions other controllers store."""

from __future__ import annotations

from typing import Any

from nlb_sdn.config import Config, ConfigError, dump_config, parse_config
from nlb_sdn.config.state import StateBackend
from nlb_sdn.store import ConfigStore, StaleVersion, StateError, StoredState, state_path
from nlb_sdn.store.file import FileStore
from nlb_sdn.store.redis_store import RedisStore


def make_store(config: Config, config_path: str) -> ConfigStore:
    """The store ``controller.state`` names: the state file (beside ``config_path`` by default) or Redis."""
    settings = config.controller.state
    if settings.backend == StateBackend.REDIS:
        return RedisStore(settings.url or config.controller.dam.url, settings.prefix)
    return FileStore(state_path(config_path, settings.path))


def vips_of(config: Config) -> list[dict[str, Any]]:
    """The VIPs of a model as the plain data a store keeps."""
    vips: list[dict[str, Any]] = dump_config(config)["vips"]
    return vips


def fabric_of(config: Config, file_config: Config) -> dict[str, Any] | None:
    """The fabric a store keeps with a model: its fabric section when it differs from the config file's, else None."""
    if config.fabric == file_config.fabric:
        return None
    fabric: dict[str, Any] = dump_config(config)["fabric"]
    return fabric


def seed_ids(config: Config) -> dict[str, int]:
    """The ids a fresh controller gives the config file's VIPs: 1, 2, ... in the file's order."""
    return {vip.name: position for position, vip in enumerate(config.vips, 1)}


class OperatorState:
    """The store, the version this controller applies, and the config file's sections the store does not hold."""

    def __init__(self, store: ConfigStore, file_config: Config) -> None:
        self.store = store
        self.file_config = file_config
        self.version = 0
        """The stored version the live model is (0 only while the store could not be seeded)."""
        self.vip_ids: dict[str, int] = {}
        """The VIP ids stored with that version."""

    def start(self) -> Config:
        """The model to start with: the stored VIPs over the file's other sections; an empty store is seeded with the
        file's VIPs first. StateError (naming the store) when the state cannot be read, is corrupt or does not fit."""
        stored = self.store.load()
        if stored is None:
            ids = seed_ids(self.file_config)
            try:
                self.version = self.store.save(vips_of(self.file_config), ids, expected=0)
            except StaleVersion:  # another controller seeded the shared store first: take its state
                stored = self.store.load()
            else:
                self.vip_ids = ids
                return self.file_config
        if stored is None:
            raise StateError(self.store.location, "the state vanished while it was being read")
        config = self.model_of(stored)
        self.version, self.vip_ids = stored.version, stored.vip_ids
        return config

    def model_of(self, stored: StoredState) -> Config:
        """The model of a stored version: its VIPs (and fabric, when it holds one) over the file's sections; StateError
        when they do not validate."""
        data = dump_config(self.file_config)
        data["vips"] = stored.vips
        if stored.fabric is not None:
            data["fabric"] = stored.fabric
        try:
            return parse_config(data, source=self.store.location)
        except ConfigError as exc:
            raise StateError(self.store.location, f"version {stored.version}: {exc.key}: {exc.reason}") from None

    def commit(self, new: Config, vip_ids: dict[str, int], expected: int | None) -> int:
        """Store ``new`` (its VIPs and their ids) before it is applied; its version. With ``expected`` (If-Match),
        StaleVersion unless both this controller and the store are at that version; without, the last writer wins."""
        if expected is not None and expected != self.version:
            raise StaleVersion(expected, self.version)
        self.version = self.store.save(vips_of(new), vip_ids, expected, fabric_of(new, self.file_config))
        self.vip_ids = dict(vip_ids)
        return self.version

    def newer(self) -> tuple[StoredState, Config] | None:
        """A version newer than the live one that the change feed announced, with its model (outside the event loop)."""
        if not self.store.changed():
            return None
        stored = self.store.load()
        if stored is None or stored.version <= self.version:
            return None
        return stored, self.model_of(stored)

    def follow(self, stored: StoredState) -> bool:
        """Take a newer stored version as the live one (in the event loop); False when it is not newer any more."""
        if stored.version <= self.version:
            return False
        self.version, self.vip_ids = stored.version, stored.vip_ids
        return True
