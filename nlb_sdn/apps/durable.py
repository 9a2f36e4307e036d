"""The shell's side of the durable operator state: commit a REST change to the store before applying it, and follow
the versions other controllers store (Redis change feed), each applied through the one flow-diff path."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from nlb_sdn.config import Config
from nlb_sdn.framework import EventBase, hub
from nlb_sdn.store import StateError, StoredState

if TYPE_CHECKING:
    from nlb_sdn.apps.classifier import Classifier

STATE_PERIOD = 0.25
"""Seconds between two looks at the state store's change feed."""
LOG = logging.getLogger("nlb_sdn.classifier")


class EventStateChange(EventBase):
    """A newer version of the operator state another controller stored, and its model."""

    def __init__(self, stored: StoredState, config: Config) -> None:
        super().__init__()
        self.stored = stored
        self.config = config


def commit_config(app: Classifier, new: Config, expected: int | None) -> int:
    """In the event loop: store ``new`` with the VIP ids it will have, then apply it; its version (StaleVersion or
    StateError before anything is applied when the store refuses it)."""
    version = app.state.commit(new, app.lb.ctx.vips.plan(new.vips), expected)
    app.carry_out(app.lb.apply_config(new, dpids=list(app.datapaths), now=time.time()))
    return version


def apply_state_change(app: Classifier, ev: EventStateChange) -> None:
    """In the event loop: apply a newer stored version (with its VIP ids) unless this controller already has it."""
    if app.state.follow(ev.stored):
        app.lb.ctx.vips.prefer(ev.stored.vip_ids)
        app.carry_out(app.lb.apply_config(ev.config, dpids=list(app.datapaths), now=time.time()))
        LOG.info("applied operator state version %d from %s", ev.stored.version, app.state.store.location)


def follow_state(app: Classifier) -> None:
    """For ever (a green thread): post each newer version the store's change feed announces into the event loop.

    A failing store is logged when it starts failing and when it recovers, and counted in ``errors``."""
    failing = False
    while True:
        hub.sleep(STATE_PERIOD)
        try:
            newer = app.state.newer()
        except StateError as exc:
            app.errors["state_follow"] += 1
            if not failing:
                LOG.error("following the operator state failed: %s", exc)
            failing = True
            continue
        if failing:
            LOG.info("following the operator state again (%s)", app.state.store.location)
            failing = False
        if newer is not None:
            app.post(EventStateChange(*newer))
