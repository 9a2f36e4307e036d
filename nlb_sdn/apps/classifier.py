"""The classifier app (one LBU instance): a thin os-ken shell around the LoadBalancer core, plus REST.

Run it with ``nlb-sdn controller --config FILE``, or ``NLB_SDN_CONFIG=FILE osken-manager nlb_sdn.apps.classifier``.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import time
from collections import Counter
from typing import Any, Callable

from nlb_sdn.config import Config, load_config
from nlb_sdn.core.balancer import LoadBalancer
from nlb_sdn.core.l7 import MigrationRequest
from nlb_sdn.dam import make_dam
from nlb_sdn.flows.builders import bind, flow_stats_request
from nlb_sdn.flows.dispatch import switch_flow_stats_request
from nlb_sdn.flows.templates import Prepared
from nlb_sdn.framework import (CONFIG_DISPATCHER, DEAD_DISPATCHER, MAIN_DISPATCHER, RyuApp, hub, ofp_event,
                               ofproto_v1_3, set_ev_cls, use_fast_packet_in_path)
from nlb_sdn.rest.app import make_app
from nlb_sdn.rest.server import listen, serve_on

CONFIG_ENV = "NLB_SDN_CONFIG"
TICK_PERIOD = 0.25
DAM_PERIOD = 0.05
DAM_MAINTAIN_PERIOD = 1.0
BARRIER_TIMEOUT = 1.0
"""Seconds a REST handler waits for a switch to confirm a flow change (migration commits)."""
LOG = logging.getLogger("nlb_sdn.classifier")


def read_key(path: str) -> bytes:
    """The shared H&L deployment key (empty when health is disabled); at least 16 bytes."""
    if not path:
        return b""
    with open(path, "rb") as handle:
        key = handle.read().strip()
    if len(key) < 16:
        raise RuntimeError(f"{path}: the H&L key must be at least 16 bytes")
    return key


def guarded(handler: Callable[[Any, Any], None]) -> Callable[[Any, Any], None]:
    """Log and count any exception a handler raises, naming the datapath, instead of killing the event loop."""

    @functools.wraps(handler)
    def wrapper(self: "Classifier", ev: Any) -> None:
        try:
            handler(self, ev)
        except Exception:  # noqa: BLE001 - a handler must never take the controller down
            dpid = getattr(getattr(getattr(ev, "msg", None), "datapath", None), "id", None)
            self.errors[f"handler:{handler.__name__}"] += 1
            LOG.exception("dpid=%s: %s failed", f"{dpid:016x}" if isinstance(dpid, int) else dpid, handler.__name__)

    return wrapper


class Classifier(RyuApp):
    """os-ken app: installs the pipeline, classifies punted packets, tracks connections and serves REST."""

    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        path = os.environ.get(CONFIG_ENV)
        if not path:
            raise RuntimeError(f"set {CONFIG_ENV} to the config file (or use `nlb-sdn controller --config FILE`)")
        config = load_config(path)
        key_file = config.controller.health.key_file
        if key_file and not os.path.isabs(key_file):
            key_file = os.path.join(os.path.dirname(os.path.abspath(path)), key_file)
        self.lb = LoadBalancer(config, read_key(key_file), time.time())
        self.hl_socket: socket.socket | None = None
        self.datapaths: dict[int, Any] = {}
        self.sent: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.flow_stats: dict[int, list[tuple[int, int, dict[str, Any], int]]] = {}
        self.started_at = time.time()
        self.barriers: dict[tuple[int, int], Any] = {}
        health = config.controller.health
        if health.enabled:
            self.hl_socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.hl_socket.bind((health.listen_host, health.listen_port))
            hub.spawn(self.hl_receive_loop)
            LOG.info("H&L messages on udp://%s:%d", health.listen_host, health.listen_port)
        self.dam = make_dam(config.controller.dam)
        self.dam_stats: dict[str, Any] = self.dam.stats()
        self.load_from_dam()
        hub.spawn(self.tick_loop)
        hub.spawn(self.dam_loop)
        hub.spawn(self.switch_sync_loop)
        rest = self.lb.config.controller.rest
        if rest.enabled:
            sock = listen(rest.host, rest.port)
            hub.spawn(serve_on, sock, make_app(self))
            LOG.info("REST listening on http://%s:%d/v1/", rest.host, rest.port)
        use_fast_packet_in_path(self)

    def hl_receive_loop(self) -> None:
        """Receive agent datagrams for ever; verify, apply, answer (a green thread; never raises)."""
        while True:
            try:
                data, addr = self.hl_socket.recvfrom(65535)
                self.send_datagrams(self.lb.handle_datagram(data, addr, time.time()))
            except Exception:  # noqa: BLE001 - one bad datagram must not stop the H&L handler
                self.errors["handler:hl_receive"] += 1
                LOG.exception("H&L datagram handling failed")

    def tick_loop(self) -> None:
        """Periodic work in its own green thread: host liveness, probes, postulates, directive relays."""
        while True:
            hub.sleep(TICK_PERIOD)
            try:
                now = time.time()
                datagrams, probes = self.lb.tick(now)
                self.send_datagrams(datagrams)
                self.send_per_dpid(probes)
                self.send_per_dpid(self.lb.dispatch_updates(now, list(self.datapaths)))
                self.send_per_dpid(self.lb.conntrack_audits(now))
            except Exception:  # noqa: BLE001 - the timer must keep running
                self.errors["handler:tick"] += 1
                LOG.exception("periodic H&L work failed")

    def switch_sync_loop(self) -> None:
        """Ask the switches for the connections they dispatched themselves (own green thread; replies reconcile)."""
        while True:
            hub.sleep(self.lb.config.controller.switch_sync_period)
            try:
                if any(vip.dispatch == "switch" for vip in self.lb.config.vips):
                    for datapath in list(self.datapaths.values()):
                        self.send(datapath, [switch_flow_stats_request()])
            except Exception:  # noqa: BLE001 - the timer must keep running
                self.errors["handler:switch_sync"] += 1
                LOG.exception("switch connection sync failed")

    def send_per_dpid(self, per_dpid: dict[int, list[Any]]) -> None:
        """Send each connected datapath its messages (those of datapaths gone meanwhile are dropped)."""
        for dpid, msgs in per_dpid.items():
            datapath = self.datapaths.get(dpid)
            if datapath is not None and msgs:
                self.send(datapath, msgs)

    def load_from_dam(self) -> None:
        """At start: every route and session atom the DAM holds (the Redis backend survives our restarts)."""
        now = time.time()
        atoms = []
        for prefix in ("conn:", "sess:"):
            cursor: str | None = None
            while True:
                page, cursor = self.dam.scan(prefix, cursor, 1000, now)
                atoms += page
                if cursor is None:
                    break
        self.lb.load_atoms(atoms, now)
        LOG.info("loaded %d atoms from the DAM (%s)", len(atoms), self.lb.config.controller.dam.backend)

    def dam_loop(self) -> None:
        """Write the core's DAM operations, follow other LBUs' changes, keep the store healthy (own green thread)."""
        next_maintain = 0.0
        while True:
            hub.sleep(DAM_PERIOD)
            try:
                now = time.time()
                ops, self.lb.dam_ops = self.lb.dam_ops, []
                for op in ops:
                    self.apply_dam_op(op, now)
                for change in self.dam.poll_changes():
                    self.lb.apply_dam_change(change.op, change.key, change.atom, now)
                if now >= next_maintain:
                    self.dam.maintain(now)
                    self.lb.expire(now)
                    self.dam_stats = self.dam.stats()
                    next_maintain = now + DAM_MAINTAIN_PERIOD
            except Exception:  # noqa: BLE001 - the writer must keep running
                self.errors["handler:dam"] += 1
                LOG.exception("DAM work failed")

    def apply_dam_op(self, op: tuple[Any, ...], now: float) -> None:
        """One queued write of the core: put, touch or delete."""
        origin = self.lb.origin
        if op[0] == "put":
            self.dam.put(op[1], op[2], origin=origin, ttl=op[3], now=now)
        elif op[0] == "touch":
            self.dam.touch(op[1], op[2], now)
        else:
            self.dam.delete(op[1], now)

    def dam_page(self, kind: str, cursor: str | None, count: int) -> dict[str, Any]:
        """REST backend: one page of DAM atoms of a kind."""
        prefix = "conn:" if kind == "route" else "sess:"
        atoms, next_cursor = self.dam.scan(prefix, cursor, count, time.time())
        return {"kind": kind, "atoms": [{"key": a.key, "data": a.data,
                                          "metadata": {"version": a.version, "origin": a.origin,
                                                       "expires_at": a.expires_at}} for a in atoms],
                "count": len(atoms), "next_cursor": next_cursor}

    def send_datagrams(self, datagrams: list[tuple[tuple[str, int], bytes]]) -> None:
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

    def send(self, datapath: Any, msgs: list[Any]) -> None:
        """Bind and send messages in order, counting flow-mods and packet-outs.

        Consecutive prepared messages (``templates``: a new connection's flow-mods and packet-out) go out as one
        buffer, so one queue entry and one socket write; the switch reads them in the same order either way.
        """
        batch: list[bytes] = []
        for msg in bind(msgs, datapath):
            self.sent[type(msg).__name__] += 1
            if isinstance(msg, Prepared):
                datapath.set_xid(msg)
                msg.serialize()
                batch.append(msg.buf)
                continue
            if batch:
                datapath.send(b"".join(batch))
                batch = []
            datapath.send_msg(msg)
        if batch:
            datapath.send(b"".join(batch))

    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    @guarded
    def switch_features(self, ev: Any) -> None:
        """Install the pipeline on a (re)connecting switch; connection flows in table 1 are never wiped."""
        datapath = ev.msg.datapath
        if not self.lb.known_switch(datapath.id):
            LOG.warning("dpid=%016x is not in the fabric config: base pipeline only, no paths", datapath.id)
        parser = datapath.ofproto_parser
        max_len = self.lb.config.controller.packet_in_max_len
        self.send(datapath, [parser.OFPSetConfig(None, datapath.ofproto.OFPC_FRAG_NORMAL, max_len)])
        self.send(datapath, self.lb.switch_flows(datapath.id))
        self.send(datapath, [parser.OFPBarrierRequest(None), flow_stats_request()])
        self.flow_stats[datapath.id] = []

    @set_ev_cls(ofp_event.EventOFPFlowStatsReply, MAIN_DISPATCHER)
    @guarded
    def flow_stats_reply(self, ev: Any) -> None:
        """Collect a switch's flows; once complete, delete what the model no longer wants."""
        msg = ev.msg
        dpid = msg.datapath.id
        entries = self.flow_stats.setdefault(dpid, [])
        entries += [(stat.table_id, stat.priority, dict(stat.match.items()), stat.cookie) for stat in msg.body]
        if msg.flags & msg.datapath.ofproto.OFPMPF_REPLY_MORE:
            return
        msgs = self.lb.reconcile(dpid, self.flow_stats.pop(dpid), now=time.time())
        if msgs:
            LOG.info("dpid=%016x: removing %d stale flows", dpid, len(msgs))
            self.send(msg.datapath, msgs)

    @set_ev_cls(ofp_event.EventOFPStateChange, [MAIN_DISPATCHER, DEAD_DISPATCHER])
    @guarded
    def state_change(self, ev: Any) -> None:
        """Track connected datapaths."""
        datapath = ev.datapath
        if ev.state == MAIN_DISPATCHER:
            self.datapaths[datapath.id] = datapath
            LOG.info("dpid=%016x connected", datapath.id)
        elif datapath.id is not None and self.datapaths.get(datapath.id) is datapath:
            del self.datapaths[datapath.id]
            LOG.info("dpid=%016x disconnected", datapath.id)

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    @guarded
    def packet_in(self, ev: Any) -> None:
        """Classify a punted packet and plumb its connection."""
        msg = ev.msg
        msgs = self.lb.handle_packet_in(msg.datapath.id, msg.match["in_port"], msg.data, msg.total_len,
                                        msg.table_id, time.time(), msg.cookie)
        if msgs:
            self.send(msg.datapath, msgs)

    @set_ev_cls(ofp_event.EventOFPFlowRemoved, MAIN_DISPATCHER)
    @guarded
    def flow_removed(self, ev: Any) -> None:
        """Keep the connection table exact as connection flows expire or are deleted."""
        msg = ev.msg
        ofp = msg.datapath.ofproto
        idle = msg.reason in (ofp.OFPRR_IDLE_TIMEOUT, ofp.OFPRR_HARD_TIMEOUT)
        msgs = self.lb.handle_flow_removed(msg.datapath.id, msg.table_id, msg.cookie, dict(msg.match.items()),
                                          idle=idle, now=time.time())
        if msgs:
            self.send(msg.datapath, msgs)

    @set_ev_cls(ofp_event.EventOFPBarrierReply, MAIN_DISPATCHER)
    @guarded
    def barrier_reply(self, ev: Any) -> None:
        """Wake the REST green thread waiting for this barrier (``send_confirmed``), if any."""
        waiting = self.barriers.get((ev.msg.datapath.id, ev.msg.xid))
        if waiting is not None:
            waiting.set()

    @set_ev_cls(ofp_event.EventOFPErrorMsg, [CONFIG_DISPATCHER, MAIN_DISPATCHER])
    def error_msg(self, ev: Any) -> None:
        """Count and log OpenFlow errors reported by switches."""
        msg = ev.msg
        self.errors[f"ofp_error:{msg.type}:{msg.code}"] += 1
        LOG.error("dpid=%016x OpenFlow error type=%d code=%d", msg.datapath.id, msg.type, msg.code)

    def current_config(self) -> Config:
        """REST backend: the live model."""
        return self.lb.config

    def apply_config(self, new: Config) -> None:
        """REST backend: switch to a new model through the one flow-diff path, on every connected switch."""
        self.send_per_dpid(self.lb.apply_config(new, dpids=list(self.datapaths), now=time.time()))

    def member_state(self, vip: str, member: str) -> dict[str, Any]:
        """REST backend: target and current state of a member."""
        return self.lb.member_state(vip, member)

    def allotment(self, vip: str) -> dict[str, Any]:
        """REST backend: the VIP's allotment and candidates."""
        return self.lb.allotment(vip, time.time())

    def hl_cache(self) -> dict[str, Any]:
        """REST backend: the consolidated H&L cache."""
        return self.lb.health.cache.as_dict(time.time())

    def sessions(self, vip: str | None = None, member: str | None = None) -> list[dict[str, Any]]:
        """REST backend: session table rows."""
        now = time.time()
        return [session.as_dict(now) for session in self.lb.sessions.select(vip, member) if session.expires_at > now]

    def delete_session(self, session_id: str) -> bool:
        """REST backend: forget one session (here and in the DAM)."""
        return self.lb.delete_session(session_id)

    def send_confirmed(self, dpid: int, msgs: list[Any], timeout: float = BARRIER_TIMEOUT) -> bool:
        """Send ``msgs`` and a barrier to ``dpid``; wait (in the caller's green thread) for the switch to confirm.

        False when no barrier reply came within ``timeout``; ConnectionError when the switch is not connected. Only for
        REST handlers and timers: an OpenFlow event handler must never wait.
        """
        datapath = self.datapaths.get(dpid)
        if datapath is None:
            raise ConnectionError(f"switch {dpid:016x} is not connected")
        barrier = datapath.ofproto_parser.OFPBarrierRequest(datapath)
        datapath.set_xid(barrier)
        confirmed = hub.Event()
        self.barriers[(dpid, barrier.xid)] = confirmed
        try:
            self.send(datapath, [*msgs, barrier])
            return confirmed.wait(timeout)
        finally:
            self.barriers.pop((dpid, barrier.xid), None)

    def migrations(self, limit: int | None = None) -> dict[str, Any]:
        """REST backend: the recent migrations of l7 connections and their counters."""
        return self.lb.migrations.view(limit)

    def migrate(self, request: MigrationRequest) -> tuple[dict[str, Any], bool]:
        """REST backend: a router's commit (move the connection, wait for the barrier) or outcome report.

        Returns the migration and whether the switch confirmed the flow change (True when nothing had to change).
        """
        client_ip, client_port = request.client_address
        now = time.time()
        if request.phase == "commit":
            dpid, msgs, migration = self.lb.commit_migration(request.id, request.vip, client_ip, client_port,
                                                             request.member, now)
        else:
            dpid, msgs, migration = self.lb.report_migration(
                request.id, request.vip, client_ip, client_port, request.router, request.member,
                request.outcome or "", request.reason, request.duration_ms, now)
        confirmed = self.send_confirmed(dpid, msgs) if dpid is not None and msgs else True
        return migration.as_dict(), confirmed

    def connections(self, vip: str | None = None, member: str | None = None) -> list[dict[str, Any]]:
        """REST backend: tracked connections."""
        return self.lb.connections(vip, member)

    def stats(self) -> dict[str, Any]:
        """REST backend: core counters plus switches, messages sent and errors."""
        stats = self.lb.stats()
        stats["switches"] = sorted(self.datapaths)
        stats["flow_mod"] = self.sent["OFPFlowMod"]
        stats["packet_out"] = self.sent["OFPPacketOut"]
        stats["sent"] = dict(self.sent)
        stats["errors"] = dict(self.errors)
        stats["uptime_s"] = round(time.time() - self.started_at, 3)
        stats["dam"] = self.dam_stats
        return stats
