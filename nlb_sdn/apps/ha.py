"""The classifier's side of ``controller.ha``: the election thread, OpenFlow role requests, and the takeover.

The election (:class:`~nlb_sdn.apps.election.Election`) runs in its own green thread and posts an
:class:`EventMastership` on every change and every ``REFRESH_PERIOD``. In the event loop :class:`Mastership` sets the
core's role (a slave's effects are gated, ``core/mastership.py``) and sends every switch an ``OFPRoleRequest`` with
the election's generation id. A switch that confirms us as MASTER gets the reconnect path (``Classifier.install``:
pipeline, then the flow-stats audit that adopts its live connections); until then nothing is sent to it. A switch
that refuses our generation as stale (``OFPRRFC_STALE``) makes us step down. docs/ha.md.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from nlb_sdn.apps.election import Coordinator, Election, RoleChange, ToozCoordinator, default_member_id
from nlb_sdn.apps.guard import guarded
from nlb_sdn.config import Config
from nlb_sdn.core.mastership import Role
from nlb_sdn.events import EventKind
from nlb_sdn.framework import (
    CONFIG_DISPATCHER,
    MAIN_DISPATCHER,
    EventBase,
    hub,
    ofp_event,
    ofproto_v1_3 as ofp,
    set_ev_cls,
)

if TYPE_CHECKING:
    from nlb_sdn.apps.classifier import Classifier

LOG = logging.getLogger("nlb_sdn.ha")
REFRESH_PERIOD = 1.0
"""Seconds between two re-sends of the role requests a switch has not confirmed (lost, or refused as stale)."""
OFP_ROLES = {Role.MASTER: ofp.OFPCR_ROLE_MASTER, Role.SLAVE: ofp.OFPCR_ROLE_SLAVE, Role.EQUAL: ofp.OFPCR_ROLE_EQUAL}
"""Our roles as OpenFlow 1.3 spells them."""
ROLES_BY_OFP = {value: role for role, value in OFP_ROLES.items()}


def heartbeat_period(lock_timeout: int) -> float:
    """Seconds between two election steps: a quarter of the lock's lifetime, at most 0.25 s."""
    return min(0.25, lock_timeout / 4)


class EventMastership(EventBase):
    """From the election thread: a change of role (None: only re-send unconfirmed role requests)."""

    def __init__(self, change: RoleChange | None) -> None:
        super().__init__()
        self.change = change


class Mastership:
    """The election and every switch's confirmed role, as the classifier's event loop sees them."""

    def __init__(self, app: Classifier, election: Election, period: float) -> None:
        self.app = app
        self.election = election
        self.period = period
        self.confirmed: dict[int, Role] = {}
        """The role each switch last confirmed for us (a role reply with our generation id)."""
        self.takeovers = 0
        self.stale_refusals = 0
        app.lb.role = Role.SLAVE

    @classmethod
    def of(cls, app: Classifier, config: Config, coordinator: Coordinator | None = None) -> Mastership | None:
        """The HA side of ``app`` when ``controller.ha`` is enabled (tooz over Redis unless ``coordinator``), else
        None."""
        settings = config.controller.ha
        if not settings.enabled:
            return None
        member = settings.member_id or default_member_id(config.controller.lbu_id)
        if coordinator is None:
            coordinator = ToozCoordinator(settings, member)
        LOG.info("HA: member %s of group %s at %s", member, settings.group, settings.coordination_url)
        return cls(app, Election(coordinator), heartbeat_period(settings.lock_timeout))

    @property
    def role(self) -> Role:
        """The role the election gave us."""
        return self.election.role

    def run(self) -> None:
        """For ever (a green thread): one election step per period; post changes and periodic refreshes."""
        next_refresh = 0.0
        while True:
            change = self.election.step()
            now = time.monotonic()
            if change is not None or now >= next_refresh:
                next_refresh = now + REFRESH_PERIOD
                self.app.post(EventMastership(change))
            hub.sleep(self.period)

    def may_send(self, dpid: int) -> bool:
        """Whether the core's messages may go to this switch: it confirmed us as master."""
        return self.confirmed.get(dpid) is Role.MASTER

    def roles(self) -> dict[int, str]:
        """Our role toward each connected switch (``none`` until it confirmed one)."""
        return {dpid: str(self.confirmed.get(dpid, "none")) for dpid in self.app.datapaths}

    def stats(self) -> dict[str, Any]:
        """The election's view for ``GET /v1/stats``."""
        return {
            "role": str(self.role),
            "generation": self.election.generation,
            "takeovers": self.takeovers,
            "stale_refusals": self.stale_refusals,
            "switches": {f"{dpid:016x}": role for dpid, role in sorted(self.roles().items())},
        }

    # -- in the event loop ------------------------------------------------------------------------------------------

    def changed(self, change: RoleChange | None) -> None:
        """A role change (or a refresh): set the core's role, then ask every switch that has not confirmed it."""
        if change is not None:
            self.app.lb.set_role(change.role, time.time())
            self.confirmed.clear()
            if change.role is Role.MASTER:
                self.takeovers += 1
            self.app.lb.events.record(
                EventKind.MASTERSHIP,
                time.time(),
                role=str(change.role),
                generation=change.generation,
                reason=change.reason,
            )
            LOG.warning("HA: now %s (generation %d): %s", change.role, change.generation, change.reason)
        for dpid, datapath in list(self.app.datapaths.items()):
            if self.confirmed.get(dpid) is not self.role:
                self.request(datapath)

    def request(self, datapath: Any) -> None:
        """Send our role and generation id to one switch (MASTER, or SLAVE: read-only, no packet-ins)."""
        self.confirmed.pop(datapath.id, None)
        message = datapath.ofproto_parser.OFPRoleRequest(datapath, OFP_ROLES[self.role], self.election.generation)
        self.app.send(datapath, [message])

    def role_reply(self, msg: Any) -> None:
        """A switch confirmed a role: as master, rebuild from it (pipeline, flow-stats audit) before anything else."""
        role = ROLES_BY_OFP.get(msg.role)
        if role is not self.role or msg.generation_id != self.election.generation:
            return
        datapath = msg.datapath
        self.confirmed[datapath.id] = role
        LOG.info("HA: dpid=%016x confirmed us as %s (generation %d)", datapath.id, role, msg.generation_id)
        if role is Role.MASTER:
            self.app.install(datapath)

    def role_error(self, msg: Any) -> bool:
        """A switch refused a role request (whether ``msg`` was one): stale generation id while master: step down."""
        if msg.type != ofp.OFPET_ROLE_REQUEST_FAILED:
            return False
        dpid = msg.datapath.id
        self.app.errors[f"ofp_error:{msg.type}:{msg.code}"] += 1
        if msg.code != ofp.OFPRRFC_STALE:
            LOG.error("HA: dpid=%016x refused our role request (code %d)", dpid, msg.code)
            return True
        self.stale_refusals += 1
        self.app.lb.events.record(
            EventKind.MASTERSHIP, time.time(), dpid=f"{dpid:016x}", refused="stale", generation=self.election.generation
        )
        if self.role is Role.MASTER:
            self.changed(self.election.step_down(f"dpid={dpid:016x} refused generation {self.election.generation}"))
        return True


class MastershipHandlers:
    """The classifier's handlers of the HA events (a mixin: the app's ``ha`` is a :class:`Mastership` or None)."""

    ha: Mastership | None

    @set_ev_cls(EventMastership)
    @guarded
    def on_mastership(self, ev: Any) -> None:
        """The election changed our role, or it is time to re-send unconfirmed role requests."""
        if self.ha is not None:
            self.ha.changed(ev.change)

    @set_ev_cls(ofp_event.EventOFPRoleReply, [CONFIG_DISPATCHER, MAIN_DISPATCHER])
    @guarded
    def role_reply(self, ev: Any) -> None:
        """A switch's answer to our role request."""
        if self.ha is not None:
            self.ha.role_reply(ev.msg)
