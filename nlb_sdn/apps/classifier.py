"""The classifier app (one LBU instance): a thin os-ken shell around the LoadBalancer core, plus REST.

Run it with ``nlb-sdn controller --config FILE``, or ``NLB_SDN_CONFIG=FILE osken-manager nlb_sdn.apps.classifier``
(``ryu-manager`` in the ryu 4.34 environment that scripts/ryu-venv.sh builds: docs/framework.md).

One loop: the core is entered only from the app's event loop. OpenFlow events arrive there from os-ken; timers,
the H&L socket, the DAM follower and REST calls post their own events into the same queue. The shell carries out the
:class:`~nlb_sdn.core.effects.Effects` every core entry point returns: messages to switches, DAM writes (queued for
the DAM thread) and datagrams to agents.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import Counter, deque
from collections.abc import Callable
from time import perf_counter
from typing import Any, ClassVar

from nlb_sdn import gcpolicy
from nlb_sdn.apps.dam_pages import scan_all
from nlb_sdn.apps.durable import EventStateChange, apply_state_change, follow_state
from nlb_sdn.apps.facade import ControllerFacade, EventCall
from nlb_sdn.apps.guard import guarded
from nlb_sdn.apps.ha import Mastership, MastershipHandlers
from nlb_sdn.apps.metrics import controller_metrics
from nlb_sdn.apps.reload import EventReload, install_reload_signal, on_reload_signal
from nlb_sdn.config import Health, load_config
from nlb_sdn.config.openflow import OpenFlow
from nlb_sdn.core.balancer import LoadBalancer
from nlb_sdn.core.ctcounts import CounterRow
from nlb_sdn.core.effects import DamOp, DamVerb, Effects
from nlb_sdn.core.model import ConnKey
from nlb_sdn.core.reconcile import FlowEntry
from nlb_sdn.core.tracking import forward_key
from nlb_sdn.dam import make_dam
from nlb_sdn.dam.atoms import ROUTE_PREFIX, SESSION_PREFIX, BadAtomLog
from nlb_sdn.events import EventKind, log_new_events
from nlb_sdn.flows.builders import bind, flow_stats_request
from nlb_sdn.flows.dispatch import counter_stats_requests, switch_flow_stats_request
from nlb_sdn.flows.pipeline import Table
from nlb_sdn.flows.templates import Prepared
from nlb_sdn.framework import (
    CONFIG_DISPATCHER,
    DEAD_DISPATCHER,
    MAIN_DISPATCHER,
    EventBase,
    ListenerOptions,
    RyuApp,
    hub,
    ofp_event,
    ofproto_v1_3,
    set_ev_cls,
    set_listener_defaults,
    use_fast_packet_in_path,
)
from nlb_sdn.rest.app import make_app
from nlb_sdn.rest.server import limits_of, listen_rest, rest_url, serve_on
from nlb_sdn.signed import KeyRing, load_key_ring
from nlb_sdn.store.operator import OperatorState, make_store

CONFIG_ENV = "NLB_SDN_CONFIG"
TICK_PERIOD = 0.25
DAM_PERIOD = 0.05
DAM_MAINTAIN_PERIOD = 1.0
"""Atoms per DAM scan page at start."""
BARRIER_TIMEOUT = 1.0
"""Seconds a REST handler waits for a switch to confirm a flow change (migration commits)."""
Barrier = tuple[int, int, Any]
"""A barrier sent to a switch: (dpid, xid, the event its reply sets)."""
LOG = logging.getLogger("nlb_sdn.classifier")


def read_key_ring(health: Health, config_path: str) -> KeyRing | None:
    """The controller's host keys (``health.key_file`` as ``health.key_mode`` says; relative to the config file's
    directory), None without a key file; an unusable file stops the start, naming it."""
    key_file = health.key_file
    if not key_file:
        return None
    if not os.path.isabs(key_file):
        key_file = os.path.join(os.path.dirname(os.path.abspath(config_path)), key_file)
    try:
        return load_key_ring(health.key_mode, key_file)
    except (OSError, ValueError) as exc:
        raise RuntimeError(f"{key_file}: the H&L {health.key_mode.value} key file: {exc}") from exc


def listener_options(openflow: OpenFlow, config_dir: str) -> ListenerOptions:
    """The manager's OpenFlow listener settings from ``controller.openflow`` (TLS files relative to the config's
    directory); a missing TLS file stops the start, naming it."""
    if openflow.tls is None:
        return ListenerOptions(openflow.listen_host, openflow.port)
    tls = openflow.tls.resolved(config_dir)
    for path in (tls.cert, tls.key, tls.ca):
        if not os.path.isfile(path):
            raise RuntimeError(f"controller.openflow.tls: {path}: no such file")
    return ListenerOptions(openflow.listen_host, openflow.port, tls.cert, tls.key, tls.ca)


def port_is_up(port: Any, ofproto: Any) -> bool:
    """Whether a port (an ``OFPPort``) carries traffic: administratively up with its link up."""
    return not (port.config & ofproto.OFPPC_PORT_DOWN or port.state & ofproto.OFPPS_LINK_DOWN)


def connection_counts(stats: list[Any]) -> dict[ConnKey, int]:
    """Packet counts of the exact client-to-VIP entries of table 1 in flow stats, by connection."""
    counts: dict[ConnKey, int] = {}
    for stat in stats:
        if stat.table_id == Table.CONNECTIONS:
            try:
                counts[forward_key(dict(stat.match.items()))] = stat.packet_count
            except KeyError:
                continue
    return counts


def counter_rows(stats: list[Any]) -> list[CounterRow]:
    """The entries of tables 6 and 8 in flow stats, as (table, priority, cookie, packets): counters VIPs' counts."""
    tables = (Table.SWITCH_SELECT, Table.CT_FORWARD)
    return [(s.table_id, s.priority, s.cookie, s.packet_count) for s in stats if s.table_id in tables]


class EventTick(EventBase):
    """Timer: periodic H&L work, switch-dispatch group changes and conntrack audits."""


class EventSwitchSync(EventBase):
    """Timer: ask the switches for the connections they dispatched themselves."""


class EventDatagram(EventBase):
    """An H&L datagram from an agent."""

    def __init__(self, data: bytes, addr: tuple[str, int]) -> None:
        super().__init__()
        self.data = data
        self.addr = addr


class EventDamChanges(EventBase):
    """Other LBUs' atom changes the DAM reported, whether expiry is due, and whether the store lost our atoms."""

    def __init__(self, changes: list[Any], expire: bool, republish: bool = False) -> None:
        super().__init__()
        self.changes = changes
        self.expire = expire
        self.republish = republish


class Classifier(MastershipHandlers, RyuApp):
    """os-ken app: installs the pipeline, classifies punted packets, tracks connections and serves REST."""

    OFP_VERSIONS: ClassVar[list[int]] = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        path = os.environ.get(CONFIG_ENV)
        if not path:
            raise RuntimeError(f"set {CONFIG_ENV} to the config file (or use `nlb-sdn controller --config FILE`)")
        config = load_config(path)
        self.config_path = path
        """The config file a reload (SIGHUP, ``POST /v1/config/reload``) re-reads."""
        self.state = OperatorState(make_store(config, path), config)
        """The durable operator state: the store is the truth for the VIPs once the config file seeded it."""
        config = self.state.start()
        self.listener = set_listener_defaults(
            listener_options(config.controller.openflow, os.path.dirname(os.path.abspath(path)))
        )
        """The manager's OpenFlow listener options in effect (the config's, unless its command line set them)."""
        keys = read_key_ring(config.controller.health, path) or b""
        self.lb = LoadBalancer(config, keys, time.time(), vip_ids=self.state.vip_ids)
        self.api = ControllerFacade(self)
        self.metrics = controller_metrics(self)
        self.events_logged = 0
        """The id of the last event logged (each tick logs the newer ones)."""
        """Prometheus metrics, served as ``GET /metrics`` by the REST server."""
        self.looping = False
        """Whether the event loop runs (``start``); before that, REST calls run at once."""
        self.hl_socket: socket.socket | None = None
        self.datapaths: dict[int, Any] = {}
        self.sent: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.groups_kept: Counter[int] = Counter()
        """Per switch: switch-dispatch groups it already had when it (re)connected (its ``GROUP_EXISTS`` answers)."""
        self.flow_stats: dict[tuple[int, int], list[Any]] = {}
        """Flow stats replies being gathered, by (dpid, xid)."""
        self.audits: dict[int, int] = {}
        """The xid of the full flow stats request each (re)connected switch is to answer."""
        self.refused_switches: Counter[int] = Counter()
        """Connections of switches that may not connect, by dpid."""
        self.started_at = time.time()
        self.barriers: dict[tuple[int, int], Any] = {}
        self.dam_writes: deque[DamOp] = deque()
        self.bad_atoms = BadAtomLog(LOG)
        """Atoms the core refused (after a reload or another LBU's change): each key logged once."""
        self.dam = make_dam(config.controller.dam)
        self.dam_stats: dict[str, Any] = self.dam.stats()
        self.ha = Mastership.of(self, config)
        """The election and the switches' roles with ``controller.ha`` (docs/ha.md), else None (role ``equal``)."""
        self.load_from_dam()
        use_fast_packet_in_path(self)

    def start(self) -> None:
        """Start the event loop, then the threads that feed it: timers, the H&L socket, the DAM and REST."""
        super().start()
        gcpolicy.freeze_survivors()  # no full collection re-scans the connection table (a stall of up to 1.7 s)
        self.looping = True
        controller = self.lb.config.controller
        health = controller.health
        if health.enabled:
            self.hl_socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.hl_socket.bind((health.listen_host, health.listen_port))
            self.threads.append(hub.spawn(self.hl_receive_loop))
            LOG.info("H&L messages on udp://%s:%d", health.listen_host, health.listen_port)
        self.threads.append(hub.spawn(self.timer, TICK_PERIOD, EventTick))
        self.threads.append(hub.spawn(self.timer, controller.switch_sync_period, EventSwitchSync))
        self.threads.append(hub.spawn(self.dam_loop))
        self.threads.append(hub.spawn(follow_state, self))
        if self.ha is not None:
            self.threads.append(hub.spawn(self.ha.run))
        install_reload_signal(self)
        if controller.rest.enabled:
            sock = listen_rest(controller.rest)
            self.threads.append(
                hub.spawn(
                    serve_on,
                    sock,
                    make_app(self.api, self.lb.events, self.metrics.exposition),
                    None,
                    limits_of(controller.rest),
                )
            )
            LOG.info("REST listening on %s", rest_url(controller.rest))

    def post(self, ev: Any) -> None:
        """Queue an event for the app's event loop (from a timer, a socket thread or REST)."""
        self._send_event(ev, None)

    def timer(self, period: float, event: Callable[[], Any]) -> None:
        """Post a new ``event()`` every ``period`` seconds, for ever (its own green thread)."""
        while True:
            hub.sleep(period)
            self.post(event())

    def hl_receive_loop(self) -> None:
        """Receive agent datagrams for ever and post each into the event loop (a green thread; never raises)."""
        assert self.hl_socket is not None
        while True:
            try:
                data, addr = self.hl_socket.recvfrom(65535)
                self.post(EventDatagram(data, addr))
            except Exception:  # one bad datagram must not stop the H&L receiver
                self.errors["handler:hl_receive"] += 1
                LOG.exception("H&L datagram receive failed")

    def dam_loop(self) -> None:
        """Write the core's DAM operations, follow other LBUs' changes, keep the store healthy (own green thread)."""
        next_maintain = 0.0
        while True:
            hub.sleep(DAM_PERIOD)
            now = time.time()
            maintain = now >= next_maintain
            if maintain:
                next_maintain = now + DAM_MAINTAIN_PERIOD
            self.dam_round(now, maintain)

    def dam_round(self, now: float, maintain: bool) -> None:
        """One round of the DAM thread: the queued writes, the feed, and (``maintain``) the store's upkeep.

        What the core must handle is posted into the event loop: the changes, expiry, and a re-publish when the store
        lost our atoms (never called from the loop itself).
        """
        while self.dam_writes:
            self.apply_dam_op(self.dam_writes.popleft(), now)
        try:
            changes = list(self.dam.poll_changes())
            republish = False
            if maintain:
                self.dam.maintain(now)
                republish = self.dam.take_data_loss()
                self.dam_stats = self.dam.stats()
            if changes or maintain:
                self.post(EventDamChanges(changes, maintain, republish))
        except Exception:  # the follower must keep running
            self.errors["handler:dam"] += 1
            LOG.exception("DAM work failed")

    def apply_dam_op(self, op: DamOp, now: float) -> None:
        """One write of the core: put, touch or delete; a failed write fails alone (logged and counted)."""
        origin, started = self.lb.origin, perf_counter()
        try:
            if op.verb == DamVerb.PUT:
                self.dam.put(op.key, op.data or {}, origin=origin, ttl=op.ttl, now=now)
            elif op.verb == DamVerb.TOUCH:
                self.dam.touch(op.key, op.ttl or 0.0, now)
            else:
                self.dam.delete(op.key, now)
            self.metrics.dam_latency.labels(op.verb).observe(perf_counter() - started)
        except Exception:  # the other writes of the batch go on
            self.errors[f"dam_{op.verb}"] += 1
            LOG.exception("DAM %s of %s failed", op.verb, op.key)

    def load_from_dam(self) -> None:
        """At start: every route and session atom the DAM holds (the Redis backend survives our restarts).

        Nothing the store holds stops a start: corrupt atoms are skipped (by the backend, or refused by the core),
        counted and logged, and a listing that fails is logged and ends early.
        """
        now = time.time()
        atoms = [
            atom for prefix in (ROUTE_PREFIX, SESSION_PREFIX) for atom in scan_all(self.dam, prefix, now, self.errors)
        ]
        try:
            self.carry_out(self.lb.load_atoms(atoms, now))
        except Exception:  # a start must never fail on what the store holds
            self.errors["dam_load"] += 1
            LOG.exception("loading %d atoms from the DAM failed; starting without them", len(atoms))
        self.log_rejected_atoms()
        LOG.info("loaded %d atoms from the DAM (%s)", len(atoms), self.lb.config.controller.dam.backend)

    def log_rejected_atoms(self) -> None:
        """Log (once per key) the atoms the core refused since the last call."""
        for key, reason in self.lb.rejected_atoms():
            self.bad_atoms.report(key, reason)

    # -- carrying out the core's effects ----------------------------------------------------------------------------

    def carry_out(self, effects: Effects, datapath: Any = None) -> None:
        """Send an event's messages (to ``datapath`` for its own dpid, else to connected switches), queue its DAM
        writes for the DAM thread and send its datagrams. Messages for switches gone meanwhile are dropped."""
        for dpid, msgs in effects.messages.items():
            target = datapath if datapath is not None and datapath.id == dpid else self.datapaths.get(dpid)
            if target is not None and (self.ha is None or self.ha.may_send(dpid)):
                self.send(target, msgs)
        if effects.dam:
            self.dam_writes.extend(effects.dam)
        if effects.datagrams:
            self.send_datagrams(effects.datagrams)

    def carry_out_confirmed(self, effects: Effects) -> list[Barrier]:
        """Carry out ``effects`` with a barrier after each switch's messages; the barriers to wait for.

        ConnectionError, before anything is sent, when one of the switches is not connected.
        """
        for dpid in effects.messages:
            if dpid not in self.datapaths:
                raise ConnectionError(f"switch {dpid:016x} is not connected")
        barriers = [self.send_with_barrier(dpid, list(msgs)) for dpid, msgs in effects.messages.items()]
        self.carry_out(Effects(dam=effects.dam, datagrams=effects.datagrams))
        return barriers

    def send_datagrams(self, datagrams: Any) -> None:
        """Send H&L messages to agents (UDP, best effort: the protocol resyncs what is lost)."""
        if self.hl_socket is None:
            return
        for addr, payload in datagrams:
            try:
                self.hl_socket.sendto(payload, addr)
                self.sent["hl_datagram"] += 1
            except OSError as exc:
                self.errors["hl_send"] += 1
                LOG.warning("H&L send to %s:%d failed: %s", addr[0], addr[1], exc)

    def send(self, datapath: Any, msgs: Any) -> None:
        """Bind and send messages in order, counting flow-mods and packet-outs.

        Consecutive prepared messages (``templates``: a new connection's flow-mods and packet-out) go out as one
        buffer, so one queue entry and one socket write; the switch reads them in the same order either way.
        """
        batch: list[bytearray] = []
        for msg in bind(msgs, datapath):
            self.sent[type(msg).__name__] += 1
            if isinstance(msg, Prepared):
                datapath.set_xid(msg)
                batch.append(msg.packed())
                continue
            if batch:
                datapath.send(b"".join(batch))
                batch = []
            datapath.send_msg(msg)
        if batch:
            datapath.send(b"".join(batch))

    def send_with_barrier(self, dpid: int, msgs: list[Any]) -> Barrier:
        """Send ``msgs`` and a barrier to ``dpid`` (ConnectionError when the switch is not connected)."""
        datapath = self.datapaths.get(dpid)
        if datapath is None:
            raise ConnectionError(f"switch {dpid:016x} is not connected")
        barrier = datapath.ofproto_parser.OFPBarrierRequest(datapath)
        datapath.set_xid(barrier)
        confirmed = hub.Event()
        self.barriers[(dpid, barrier.xid)] = confirmed
        self.send(datapath, [*msgs, barrier])
        return dpid, barrier.xid, confirmed

    def barrier_confirmed(self, barrier: Barrier, timeout: float = BARRIER_TIMEOUT) -> bool:
        """Wait (in the caller's green thread, never an event handler) for a barrier's reply; False on timeout."""
        dpid, xid, confirmed = barrier
        try:
            return bool(confirmed.wait(timeout))
        finally:
            self.barriers.pop((dpid, xid), None)

    def stats(self) -> dict[str, Any]:
        """Core counters plus switches, messages sent and errors."""
        stats = self.lb.stats()
        stats["switches"] = sorted(self.datapaths)
        stats["flow_mod"] = self.sent["OFPFlowMod"]
        stats["packet_out"] = self.sent["OFPPacketOut"]
        stats["sent"] = dict(self.sent)
        stats["errors"] = dict(self.errors)
        stats["uptime_s"] = round(time.time() - self.started_at, 3)
        stats["dam"] = self.dam_stats
        stats["ha"] = self.ha.stats() if self.ha is not None else {"role": "equal"}
        stats["state"] = {"version": self.state.version, "store": self.state.store.location}
        stats["openflow"] = {
            "listener": self.listener,
            "refused": {f"{dpid:016x}": count for dpid, count in sorted(self.refused_switches.items())},
            "groups_kept": {f"{dpid:016x}": count for dpid, count in sorted(self.groups_kept.items())},
        }
        return stats

    # -- events -----------------------------------------------------------------------------------------------------

    @set_ev_cls(EventTick)
    @guarded
    def on_tick(self, ev: Any) -> None:
        """Periodic work: host liveness, probes, postulates, directive relays, groups and audits."""
        self.carry_out(self.lb.tick(time.time(), list(self.datapaths)))
        self.events_logged = log_new_events(self.lb.events, self.events_logged, LOG)

    @set_ev_cls(EventSwitchSync)
    @guarded
    def on_switch_sync(self, ev: Any) -> None:
        """Ask the switches for the connections they dispatched themselves (the replies reconcile)."""
        if any(vip.dispatch == "switch" for vip in self.lb.config.vips):
            counters = counter_stats_requests() if self.lb.counts_wanted() else []
            for datapath in list(self.datapaths.values()):
                self.send(datapath, [switch_flow_stats_request(), *counters])

    @set_ev_cls(EventDatagram)
    @guarded
    def on_datagram(self, ev: Any) -> None:
        """Verify and apply an agent's datagram; answer it."""
        self.carry_out(self.lb.handle_datagram(ev.data, ev.addr, time.time()))

    @set_ev_cls(EventDamChanges)
    @guarded
    def on_dam_changes(self, ev: Any) -> None:
        """Follow other LBUs' atom changes; expire what is due; re-publish our atoms if the store lost them."""
        now = time.time()
        for change in ev.changes:
            self.carry_out(self.lb.apply_dam_change(change.op, change.key, change.atom, now))
        self.log_rejected_atoms()
        if ev.expire:
            self.carry_out(self.lb.expire(now))
        if ev.republish:
            effects = self.lb.republish(now)
            LOG.warning("the DAM store lost its atoms: re-publishing %d of ours", len(effects.dam))
            self.carry_out(effects)

    @set_ev_cls(EventStateChange)
    @guarded
    def on_state_change(self, ev: Any) -> None:
        """Apply a newer operator state another controller stored."""
        apply_state_change(self, ev)

    @set_ev_cls(EventReload)
    @guarded
    def on_reload(self, ev: Any) -> None:
        """Reload the config file (SIGHUP)."""
        on_reload_signal(self, self.config_path)

    @set_ev_cls(EventCall)
    def on_call(self, ev: Any) -> None:
        """Run a REST call's work in the loop (its exception goes back to the REST thread)."""
        ev.run()

    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    @guarded
    def switch_features(self, ev: Any) -> None:
        """Install the pipeline on a (re)connecting switch; connection flows in table 1 are never wiped."""
        datapath = ev.msg.datapath
        if not self.lb.switch_allowed(datapath.id):
            self.refuse(datapath)
            return
        if not self.lb.known_switch(datapath.id):
            LOG.warning("dpid=%016x is not in the fabric config: base pipeline only, no paths", datapath.id)
        if self.ha is not None:
            self.ha.request(datapath)  # as master, its confirmation installs
            return
        self.install(datapath)

    def install(self, datapath: Any) -> None:
        """Set a switch up and audit its flows (the replies reconcile: its live connections are adopted)."""
        parser = datapath.ofproto_parser
        max_len = self.lb.config.controller.packet_in_max_len
        self.send(datapath, [parser.OFPSetConfig(None, datapath.ofproto.OFPC_FRAG_NORMAL, max_len)])
        self.carry_out(self.lb.switch_connected(datapath.id, time.time()), datapath)
        audit = flow_stats_request()
        self.audits[datapath.id] = datapath.set_xid(audit)
        self.send(datapath, [parser.OFPPortDescStatsRequest(datapath, 0), parser.OFPBarrierRequest(None), audit])

    def refuse(self, datapath: Any) -> None:
        """Close the OpenFlow connection of a switch that may not connect: nothing is installed, nothing tracked.

        Logged once per dpid, counted every time (``openflow.refused`` in the stats).
        """
        dpid = datapath.id
        if not self.refused_switches[dpid]:
            LOG.warning(
                "dpid=%016x from %s may not connect (not in the fabric or controller.openflow.allowed_dpids): "
                "closing its connection",
                dpid,
                getattr(datapath, "address", "?"),
            )
        self.refused_switches[dpid] += 1
        self.lb.events.record_coalesced(EventKind.SWITCH_REFUSED, time.time(), None, str(dpid), dpid=f"{dpid:016x}")
        datapath.close()

    @set_ev_cls(ofp_event.EventOFPFlowStatsReply, MAIN_DISPATCHER)
    @guarded
    def flow_stats_reply(self, ev: Any) -> None:
        """Collect a switch's flows; once complete, delete what the model no longer wants."""
        msg = ev.msg
        dpid = msg.datapath.id
        if not self.lb.switch_allowed(dpid):
            return
        stats = self.flow_stats.setdefault((dpid, msg.xid), [])
        stats += msg.body
        if msg.flags & msg.datapath.ofproto.OFPMPF_REPLY_MORE:
            return
        stats = self.flow_stats.pop((dpid, msg.xid))
        entries: list[FlowEntry] = [(s.table_id, s.priority, dict(s.match.items()), s.cookie) for s in stats]
        after_connect = dpid in self.audits and self.audits[dpid] == msg.xid
        if after_connect:
            del self.audits[dpid]
        now = time.time()
        effects = self.lb.reconcile(dpid, entries, now, after_connect)
        if effects.messages:
            LOG.info("dpid=%016x: removing %d stale flows", dpid, len(effects.to(dpid)))
        self.carry_out(effects, msg.datapath)
        if not after_connect:
            self.carry_out(self.lb.packet_counts(dpid, connection_counts(stats), now), msg.datapath)
            self.lb.switch_counts(dpid, counter_rows(stats), now)

    @set_ev_cls(ofp_event.EventOFPStateChange, [MAIN_DISPATCHER, DEAD_DISPATCHER])
    @guarded
    def state_change(self, ev: Any) -> None:
        """Track connected datapaths."""
        datapath, dpid = ev.datapath, ev.datapath.id
        if ev.state == MAIN_DISPATCHER:
            if not self.lb.switch_allowed(dpid):
                return
            self.datapaths[dpid] = datapath
            LOG.info("dpid=%016x connected", dpid)
            address = str(getattr(datapath, "address", ""))
            self.lb.events.record(EventKind.SWITCH_CONNECT, time.time(), dpid=f"{dpid:016x}", address=address)
        elif dpid is not None and self.datapaths.get(dpid) is datapath:
            del self.datapaths[dpid]
            self.audits.pop(dpid, None)
            self.lb.events.record(EventKind.SWITCH_DISCONNECT, time.time(), dpid=f"{dpid:016x}")
            self.carry_out(self.lb.switch_down(dpid, time.time()))
            LOG.info("dpid=%016x disconnected: its connections are checked against its flows when it reconnects", dpid)

    @set_ev_cls(ofp_event.EventOFPPortStatus, MAIN_DISPATCHER)
    @guarded
    def port_status(self, ev: Any) -> None:
        """A port was added, removed or changed state: the core reroutes when a fabric link or host went up or down."""
        msg = ev.msg
        if not self.lb.switch_allowed(msg.datapath.id):
            return
        up = msg.reason != msg.datapath.ofproto.OFPPR_DELETE and port_is_up(msg.desc, msg.datapath.ofproto)
        self.carry_out(self.lb.port_status(msg.datapath.id, msg.desc.port_no, up, time.time()))

    @set_ev_cls(ofp_event.EventOFPPortDescStatsReply, MAIN_DISPATCHER)
    @guarded
    def port_desc_reply(self, ev: Any) -> None:
        """A (re)connected switch's ports: the core takes the state of each (a link cut meanwhile is seen here)."""
        msg = ev.msg
        if not self.lb.switch_allowed(msg.datapath.id):
            return
        for port in msg.body:
            up = port_is_up(port, msg.datapath.ofproto)
            self.carry_out(self.lb.port_status(msg.datapath.id, port.port_no, up, time.time()))

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    @guarded
    def packet_in(self, ev: Any) -> None:
        """Classify a punted packet and plumb its connection."""
        msg = ev.msg
        if not self.lb.switch_allowed(msg.datapath.id):
            return
        started = perf_counter()
        effects = self.lb.handle_packet_in(
            msg.datapath.id, msg.match["in_port"], msg.data, msg.total_len, msg.table_id, time.time(), msg.cookie
        )
        self.metrics.decision_latency.observe(perf_counter() - started)
        self.carry_out(effects, msg.datapath)

    @set_ev_cls(ofp_event.EventOFPFlowRemoved, MAIN_DISPATCHER)
    @guarded
    def flow_removed(self, ev: Any) -> None:
        """Keep the connection table exact as connection flows expire or are deleted."""
        msg = ev.msg
        if not self.lb.switch_allowed(msg.datapath.id):
            return
        ofp = msg.datapath.ofproto
        idle = msg.reason in (ofp.OFPRR_IDLE_TIMEOUT, ofp.OFPRR_HARD_TIMEOUT)
        self.carry_out(
            self.lb.handle_flow_removed(
                msg.datapath.id, msg.table_id, msg.cookie, dict(msg.match.items()), idle=idle, now=time.time()
            ),
            msg.datapath,
        )

    @set_ev_cls(ofp_event.EventOFPBarrierReply, MAIN_DISPATCHER)
    @guarded
    def barrier_reply(self, ev: Any) -> None:
        """Wake the REST green thread waiting for this barrier (``barrier_confirmed``), if any."""
        waiting = self.barriers.get((ev.msg.datapath.id, ev.msg.xid))
        if waiting is not None:
            waiting.set()

    @set_ev_cls(ofp_event.EventOFPErrorMsg, [CONFIG_DISPATCHER, MAIN_DISPATCHER])
    def error_msg(self, ev: Any) -> None:
        """Count and log OpenFlow errors reported by switches (a kept switch-dispatch group is not one)."""
        msg = ev.msg
        ofproto = msg.datapath.ofproto
        if self.ha is not None and self.ha.role_error(msg):
            return
        if (msg.type, msg.code) == (ofproto.OFPET_GROUP_MOD_FAILED, ofproto.OFPGMFC_GROUP_EXISTS):
            self.groups_kept[msg.datapath.id] += 1
            LOG.info(
                "dpid=%016x kept its switch-dispatch group (and its buckets) across the reconnect", msg.datapath.id
            )
            return
        self.errors[f"ofp_error:{msg.type}:{msg.code}"] += 1
        LOG.error("dpid=%016x OpenFlow error type=%d code=%d", msg.datapath.id, msg.type, msg.code)
