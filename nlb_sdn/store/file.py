"""The embedded default store: one JSON state file beside the config, replaced atomically (temp file, fsync, rename)."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

from nlb_sdn.store import StaleVersion, StateError, StoredState, state_from_document


class FileStore:
    """The operator state in a local file; a write is complete or absent, never torn, even after a crash (SIGKILL)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.location = path

    def load(self) -> StoredState | None:
        """The state in the file; None when there is no file; StateError naming the file when unreadable or corrupt."""
        try:
            with open(self.path, "rb") as handle:
                raw = handle.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(self.location, f"cannot read the state file: {exc.strerror or exc}") from None
        try:
            document = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            reason = f"the state file is corrupt (not JSON: {exc})".splitlines()[0]
            raise StateError(self.location, reason) from None
        return state_from_document(document, self.location)

    def save(
        self,
        vips: list[dict[str, Any]],
        vip_ids: dict[str, int],
        expected: int | None,
        fabric: dict[str, Any] | None = None,
    ) -> int:
        """Write the next version if the file holds ``expected`` (None: any; 0: no file yet); the new version."""
        current = self.load()
        version = 0 if current is None else current.version
        if expected is not None and expected != version:
            raise StaleVersion(expected, version)
        state = StoredState(version + 1, vips, vip_ids, fabric)
        self._write_atomically(json.dumps(state.document(), indent=1, sort_keys=True).encode() + b"\n")
        return state.version

    def _write_atomically(self, data: bytes) -> None:
        """Write ``data`` to a temp file beside the file, fsync it, rename it over the file, fsync the directory."""
        directory = os.path.dirname(self.path) or "."
        handle, temp = tempfile.mkstemp(prefix=os.path.basename(self.path) + ".", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, self.path)
        except OSError as exc:
            if os.path.exists(temp):
                os.unlink(temp)
            raise StateError(self.location, f"cannot write the state file: {exc.strerror or exc}") from None
        directory_handle = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(directory_handle)
        finally:
            os.close(directory_handle)

    def changed(self) -> bool:
        """Never: one controller owns its state file, and nobody else writes it."""
        return False

    def close(self) -> None:
        """Nothing to release."""
