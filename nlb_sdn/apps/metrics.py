"""The classifier app's metrics: the snapshot a scrape reads, taken in the app's event loop."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nlb_sdn.metrics.controller import ControllerMetrics, ControllerSnapshot, shares

if TYPE_CHECKING:
    from nlb_sdn.apps.classifier import Classifier


def take_snapshot(app: Classifier) -> ControllerSnapshot:
    """The controller's state for one scrape (call it in the event loop): stats, members, the allotments in use
    (never computing one, which would advance its generation), events."""
    lb = app.lb
    members = [lb.member_state(vip.name, member.name) for vip in lb.config.vips for member in vip.members]
    allotments: dict[str, dict[str, float]] = {}
    for name, spender in lb.health.spenders.items():
        if spender.allotment is not None:  # none is issued before a VIP's first new connection
            allotments[name] = shares(spender.allotment.as_dict())
    return ControllerSnapshot(app.stats(), members, allotments, {str(k): n for k, n in lb.events.recorded.items()})


def controller_metrics(app: Classifier) -> ControllerMetrics:
    """The app's metrics, whose collector reads a snapshot through the REST facade (in the event loop)."""
    return ControllerMetrics(lambda: app.api.read(lambda: take_snapshot(app)))
