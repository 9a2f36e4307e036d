"""The operator state in Redis, shared by LBU instances: a versioned hash, a Lua compare-and-set, a change feed."""

from __future__ import annotations

import json
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import redis

from nlb_sdn.dam.sentinel import redis_client
from nlb_sdn.store import StaleVersion, StateError, StoredState, state_from_document

STATE_KEY = "state"
"""The hash (after the prefix) holding ``version`` and ``document`` (that version's JSON state, less its version)."""
CHANGES_CHANNEL = "state-changes"
"""The channel (after the prefix) every new version is published on, its version as the message."""
TIMEOUT = 2.0
"""Seconds a Redis call may take before the store counts as unreachable."""
# KEYS: the state hash; ARGV: expected version ('' = any), the new document without its version, the channel.
SAVE_LUA = """
local stored = redis.call('HGET', KEYS[1], 'version')
local version = 0
if stored then
  version = tonumber(stored)
  if not version then return {-1, 0} end
end
if ARGV[1] ~= '' and tonumber(ARGV[1]) ~= version then return {0, version} end
redis.call('HSET', KEYS[1], 'version', version + 1, 'document', ARGV[2])
redis.call('PUBLISH', ARGV[3], version + 1)
return {1, version + 1}
"""
ERRORS = (redis.exceptions.RedisError, OSError)
"""What a Redis call raises when the store is down, refuses the call, or holds another type at the key."""


def without_password(url: str) -> str:
    """``url`` with any password left out, fit for errors and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}@{parts.netloc.rpartition('@')[2]}"))


class RedisStore:
    """The operator state as the hash ``<prefix>state``; each new version is published on ``<prefix>state-changes``."""

    def __init__(self, url: str, prefix: str = "nlb:") -> None:
        self._client = redis_client(url, TIMEOUT)
        self.key = prefix + STATE_KEY
        self.channel = prefix + CHANGES_CHANNEL
        self.location = f"{without_password(url)} key {self.key}"
        self._save = self._client.register_script(SAVE_LUA)
        self._pubsub: Any = None

    def load(self) -> StoredState | None:
        """The stored state; None while the hash does not exist; StateError when unreachable or corrupt."""
        try:
            version, document = cast(list[bytes | None], self._client.hmget(self.key, ["version", "document"]))
        except ERRORS as exc:
            raise StateError(self.location, f"cannot read the state: {exc}") from None
        if version is None and document is None:
            return None
        try:
            data = json.loads(document or b"")
            number = int(version or b"")
        except (TypeError, UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise StateError(self.location, f"the state is corrupt: {exc}".splitlines()[0]) from None
        if isinstance(data, dict):
            data["version"] = number
        return state_from_document(data, self.location)

    def save(
        self,
        vips: list[dict[str, Any]],
        vip_ids: dict[str, int],
        expected: int | None,
        fabric: dict[str, Any] | None = None,
    ) -> int:
        """Compare-and-set in one Lua script: the next version if Redis holds ``expected`` (None: any)."""
        document = StoredState(0, vips, vip_ids, fabric).document()
        del document["version"]  # the hash's own field, set by the script
        try:
            done, version = self._save(
                keys=[self.key], args=["" if expected is None else expected, json.dumps(document), self.channel]
            )
        except ERRORS as exc:
            raise StateError(self.location, f"cannot store the state: {exc}") from None
        if done == -1:
            raise StateError(self.location, "the stored version is not a number")
        if not done:
            raise StaleVersion(expected or 0, int(version))
        return int(version)

    def changed(self) -> bool:
        """Whether a new version was published since the last call (True also after the feed was (re)subscribed,
        since versions published while it was down are missed); StateError when Redis is unreachable."""
        try:
            if self._pubsub is None:
                pubsub = self._client.pubsub()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
                pubsub.subscribe(self.channel)
                self._pubsub = pubsub
                return True
            seen = False
            while (message := self._pubsub.get_message(timeout=0)) is not None:
                seen = seen or message["type"] == "message"
            return seen
        except ERRORS as exc:
            self.close()
            raise StateError(self.location, f"the change feed failed: {exc}") from None

    def close(self) -> None:
        """Drop the feed subscription (the next ``changed`` subscribes again)."""
        if self._pubsub is not None:
            pubsub, self._pubsub = self._pubsub, None
            pubsub.close()
