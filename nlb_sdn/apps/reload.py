"""The shell's config reload: SIGHUP and ``POST /v1/config/reload`` both re-read the config file in the event loop and
apply it through the one flow-diff path (``LoadBalancer.apply_config``).

An invalid file changes nothing: every problem is logged (and answered to REST) and a ``config_reload`` event with
outcome ``invalid`` is recorded. A valid one applies the file's ``controller`` and ``fabric`` sections (settings read
only at start are reported as needing a restart and keep their live value) and keeps the store's VIPs, or, with
``vips=file``, stores the file's VIPs as the next version of the operator state first (compare-and-set).
"""

from __future__ import annotations

import logging
import signal
import time
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from nlb_sdn.config import ConfigError
from nlb_sdn.config.reload import VipsSource, read_reload
from nlb_sdn.events import EventKind
from nlb_sdn.framework import EventBase
from nlb_sdn.store import StaleVersion, StateError

if TYPE_CHECKING:
    from nlb_sdn.apps.classifier import Classifier

LOG = logging.getLogger("nlb_sdn.classifier")


class ReloadOutcome(StrEnum):
    """The ``outcome`` of a ``config_reload`` event."""

    APPLIED = "applied"
    INVALID = "invalid"


class EventReload(EventBase):
    """A reload of the config file asked for by SIGHUP (keeping the store's VIPs)."""


def reload_config(
    app: Classifier, path: str, vips: VipsSource = VipsSource.STORE, expected: int | None = None
) -> dict[str, Any]:
    """In the event loop: re-read the config file at ``path`` and apply it; the answer (version, vips, changed,
    needs_restart). ConfigError (nothing changed, logged and recorded), StaleVersion (If-Match) or StateError (the
    file's VIPs could not be stored) before anything is applied."""
    now = time.time()
    try:
        plan = read_reload(path, app.lb.config, vips)
    except ConfigError as exc:
        LOG.error("config reload of %s refused, nothing changed:\n%s", path, exc)
        problems = [f"{problem.key}: {problem.reason}" for problem in exc.problems]
        app.lb.events.record(EventKind.CONFIG_RELOAD, now, outcome=str(ReloadOutcome.INVALID), problems=problems)
        raise
    if expected is not None and expected != app.state.version:
        raise StaleVersion(expected, app.state.version)
    if vips == VipsSource.FILE:
        app.state.commit(plan.config, app.lb.ctx.vips.plan(plan.config.vips), expected)
    app.state.file_config = plan.config
    app.carry_out(app.lb.apply_config(plan.config, dpids=list(app.datapaths), now=now))
    view = plan.view(app.state.version, vips)
    app.lb.events.record(EventKind.CONFIG_RELOAD, now, outcome=str(ReloadOutcome.APPLIED), **view)
    LOG.info("config reloaded from %s (vips from the %s): changed %s", path, vips, ", ".join(plan.changed) or "nothing")
    for key in plan.needs_restart:
        LOG.warning("config reload: %s changed in %s but needs a restart; the running value stays", key, path)
    return view


def on_reload_signal(app: Classifier, path: str) -> None:
    """In the event loop: a SIGHUP's reload; a refused one is logged (by :func:`reload_config`) and changes nothing."""
    try:
        reload_config(app, path)
    except ConfigError:
        app.errors["config_reload"] += 1
    except StateError as exc:
        app.errors["config_reload"] += 1
        LOG.error("config reload of %s failed: %s", path, exc)


def install_reload_signal(app: Classifier) -> bool:
    """Make SIGHUP post an :class:`EventReload` into the app's loop (nothing else runs in the handler); False when
    signals cannot be handled here (not the main thread)."""
    try:  # green threads all run in the interpreter's main thread, so the app's start may install it
        signal.signal(signal.SIGHUP, lambda signum, frame: app.post(EventReload()))
    except ValueError:  # another OS thread
        LOG.warning("SIGHUP cannot reload the config here (not the main thread); use POST /v1/config/reload")
        return False
    return True
