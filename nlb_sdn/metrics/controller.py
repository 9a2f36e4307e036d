"""The controller's metrics: histograms the shell observes, and a collector of the core's state at scrape time.

The collector reads one :class:`ControllerSnapshot` per scrape, taken in the app's event loop (the REST thread waits
for it as for any REST call), so a scrape never reads the core while it changes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, StateSetMetricFamily
from prometheus_client.registry import Collector

from nlb_sdn.core.effects import DamVerb
from nlb_sdn.core.l7 import OUTCOMES
from nlb_sdn.core.refusals import RefusalReason
from nlb_sdn.events import EventKind
from nlb_sdn.metrics import counter, exposition, gauge

PACKET_IN_KINDS = (
    "total",
    "new_connection",
    "new_session",
    "existing_connection",
    "syn_retransmit",
    "port_reuse",
    "replumb",
    "session_flow_pending",
    "held_truncated",
    "arp",
    "probe_reply",
    "conntrack_copy",
)
"""What the core counts under ``packet_in`` (``total`` is every packet-in; the others say what it was)."""
MEMBER_STATES = ("active", "draining", "drained", "inactive")
"""A member's current load-balancing states."""
MIGRATION_OUTCOMES = ("committed", *OUTCOMES)
"""Migration commits, then how routers reported the migrations ended."""
SWITCH_EVENTS = {
    "connect": EventKind.SWITCH_CONNECT,
    "disconnect": EventKind.SWITCH_DISCONNECT,
    "refused": EventKind.SWITCH_REFUSED,
}
"""The ``event`` label of switch connections, and the event kind that counts it."""
MASTERSHIP_ROLE = "equal"
"""This controller's OpenFlow role toward every switch without ``controller.ha``: it sends no role request, so each
connected switch holds it as ``equal``, which may modify its state as a master can. With HA the role is ``master``,
``slave`` or ``none`` (not confirmed yet) per switch, from ``stats["ha"]["switches"]`` (docs/ha.md)."""
DECISION_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)
"""Seconds: the classifier decides in tens of microseconds; the top buckets catch garbage-collector stalls."""
DAM_BUCKETS = (0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0)
"""Seconds: in-process writes take microseconds, Redis round trips a millisecond or more."""


@dataclass
class ControllerSnapshot:
    """What one scrape reads from the controller, taken in its event loop."""

    stats: dict[str, Any]
    """``Classifier.stats()``: the core's counters, messages sent, errors, connected switches."""
    members: list[dict[str, Any]] = field(default_factory=list)
    """Every configured member's ``member_state`` view (vip, member, health, current, connections)."""
    allotments: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per VIP, each member's share (0..1) of the allotment in use."""
    events: Mapping[str, int] = field(default_factory=dict)
    """Events recorded since start, by kind."""


def shares(allotment: Mapping[str, Any]) -> dict[str, float]:
    """Each endpoint's share (0..1) of an allotment view (percentages or tokens alike)."""
    values = {str(name): float(value) for name, value in (allotment.get("values") or {}).items()}
    total = sum(values.values())
    return {name: value / total if total else 0.0 for name, value in values.items()}


class ControllerCollector(Collector):
    """Turns a snapshot of the controller into metric families (every one present from start)."""

    def __init__(self, read: Callable[[], ControllerSnapshot]) -> None:
        self.read = read

    def collect(self) -> Iterator[Metric]:
        """Read one snapshot and yield the families of the OpenFlow channel, the connections and the members."""
        snapshot = self.read()
        yield from openflow_families(snapshot)
        yield from connection_families(snapshot)
        yield from member_families(snapshot)


def openflow_families(snapshot: ControllerSnapshot) -> Iterator[Metric]:
    """Packet-ins, messages sent, OpenFlow errors, switch connections and mastership."""
    stats = snapshot.stats
    yield counter(
        "nlb_sdn_packet_ins",
        "Packet-ins by what they were (total: all of them).",
        "kind",
        stats.get("packet_in", {}),
        PACKET_IN_KINDS,
    )
    yield counter("nlb_sdn_packet_ins_dropped", "Packet-ins dropped, by reason.", "reason", stats.get("dropped", {}))
    sent = stats.get("sent", {})
    yield CounterMetricFamily("nlb_sdn_flow_mods", "Flow-mods sent to switches.", value=sent.get("OFPFlowMod", 0))
    yield CounterMetricFamily("nlb_sdn_packet_outs", "Packet-outs sent.", value=sent.get("OFPPacketOut", 0))
    yield counter("nlb_sdn_openflow_messages_sent", "Messages sent to switches, by type.", "type", sent)
    errors = {key: count for key, count in stats.get("errors", {}).items() if key.startswith("ofp_error:")}
    yield CounterMetricFamily(
        "nlb_sdn_openflow_errors", "OpenFlow errors switches reported.", value=sum(errors.values())
    )
    by_code = CounterMetricFamily(
        "nlb_sdn_openflow_errors_by_code", "OpenFlow errors by type and code.", labels=["type", "code"]
    )
    for key, count in sorted(errors.items()):
        _, error_type, code = key.split(":")
        by_code.add_metric([error_type, code], count)
    yield by_code
    handler_errors = {k: v for k, v in stats.get("errors", {}).items() if not k.startswith("ofp_error:")}
    yield counter(
        "nlb_sdn_controller_errors", "Handler and I/O failures of the shell, by where.", "where", handler_errors
    )
    yield counter(
        "nlb_sdn_switch_connections",
        "Switch connections, disconnections and refusals.",
        "event",
        {name: snapshot.events.get(kind, 0) for name, kind in SWITCH_EVENTS.items()},
    )
    switches = stats.get("switches", [])
    yield gauge("nlb_sdn_switches_connected", "Switches connected now.", len(switches))
    mastership = GaugeMetricFamily(
        "nlb_sdn_mastership", "This controller's role toward each connected switch (1).", labels=["dpid", "role"]
    )
    roles = stats.get("ha", {}).get("switches", {})
    for dpid in switches:
        mastership.add_metric([f"{dpid:016x}", roles.get(f"{dpid:016x}", MASTERSHIP_ROLE)], 1)
    yield mastership
    yield counter(
        "nlb_sdn_events",
        "Events recorded in the event log, by kind.",
        "kind",
        {str(kind): count for kind, count in snapshot.events.items()},
        [str(kind) for kind in EventKind],
    )


def connection_families(snapshot: ControllerSnapshot) -> Iterator[Metric]:
    """Connections per VIP and member, new connections and refusals, migrations."""
    stats = snapshot.stats
    per_member: dict[str, dict[str, int]] = stats.get("connections", {}).get("per_member", {})
    members = [(str(view["vip"]), str(view["member"])) for view in snapshot.members]
    yield gauge("nlb_sdn_connections_tracked", "Connections tracked now.", stats.get("connections", {}).get("total", 0))
    per_vip = GaugeMetricFamily("nlb_sdn_vip_connections", "Connections tracked now, per VIP.", labels=["vip"])
    for vip in dict.fromkeys([vip for vip, _ in members] + list(per_member)):
        per_vip.add_metric([vip], sum(per_member.get(vip, {}).values()))
    yield per_vip
    by_member = GaugeMetricFamily(
        "nlb_sdn_member_connections", "Connections tracked now, per member.", labels=["vip", "member"]
    )
    selected = CounterMetricFamily(
        "nlb_sdn_member_selections", "New connections and sessions given to each member.", labels=["vip", "member"]
    )
    selections: dict[str, dict[str, int]] = stats.get("selections", {})
    for vip, member in members:
        by_member.add_metric([vip, member], per_member.get(vip, {}).get(member, 0))
        selected.add_metric([vip, member], selections.get(vip, {}).get(member, 0))
    yield by_member
    yield selected
    yield counter(
        "nlb_sdn_connections_refused",
        "New connections refused, by reason.",
        "reason",
        stats.get("refused", {}),
        [*RefusalReason, "warming_up"],
    )
    migrations = {k: v for k, v in stats.get("migrations", {}).items() if not k.startswith("reason:")}
    yield counter(
        "nlb_sdn_migrations",
        "l7 migrations: commits, then outcomes the routers reported.",
        "outcome",
        migrations,
        MIGRATION_OUTCOMES,
    )
    fabric = stats.get("fabric", {})
    yield gauge("nlb_sdn_fabric_ports_down", "Fabric link and host ports down now.", fabric.get("down_ports", 0))
    yield gauge("nlb_sdn_fabric_switches_down", "Fabric switches disconnected now.", fabric.get("down_switches", 0))
    yield CounterMetricFamily(
        "nlb_sdn_fabric_path_recomputations",
        "Path recomputations after a fabric port or switch went down or up.",
        value=fabric.get("path_recomputations", 0),
    )


def member_families(snapshot: ControllerSnapshot) -> Iterator[Metric]:
    """Each member's health, current state and allotment share."""
    up = GaugeMetricFamily("nlb_sdn_member_up", "1 when the member's health is ok.", labels=["vip", "member"])
    state = StateSetMetricFamily(
        "nlb_sdn_member_state", "The member's current load-balancing state.", labels=["vip", "member"]
    )
    share = GaugeMetricFamily(
        "nlb_sdn_allotment_share", "The member's share (0..1) of its VIP's allotment.", labels=["vip", "member"]
    )
    for view in snapshot.members:
        labels = [str(view["vip"]), str(view["member"])]
        up.add_metric(labels, 1 if view["health"] == "ok" else 0)
        state.add_metric(labels, {name: view["current"] == name for name in MEMBER_STATES})
        share.add_metric(labels, snapshot.allotments.get(labels[0], {}).get(labels[1], 0.0))
    yield up
    yield state
    yield share


class ControllerMetrics:
    """The controller's registry: the shell's histograms and the snapshot collector."""

    def __init__(self, read: Callable[[], ControllerSnapshot]) -> None:
        self.registry = CollectorRegistry()
        self.decision_latency = Histogram(
            "nlb_sdn_classifier_decision_seconds",
            "Time the core takes to handle one packet-in (classify, choose, build the flows).",
            buckets=DECISION_BUCKETS,
            registry=self.registry,
        )
        self.dam_latency = Histogram(
            "nlb_sdn_dam_operation_seconds",
            "Time one DAM write takes, by operation.",
            ["op"],
            buckets=DAM_BUCKETS,
            registry=self.registry,
        )
        for verb in DamVerb:
            self.dam_latency.labels(str(verb))
        self.registry.register(ControllerCollector(read))

    def exposition(self) -> bytes:
        """Every metric in the Prometheus text format."""
        return exposition(self.registry)
