"""A fake OpenFlow 1.3 switch that applies os-ken message objects and traces packet dicts through its flow tables.

A packet is a dict keyed by os-ken OXM field names (``in_port``, ``eth_src``, ``eth_type``, ``ipv4_dst``, ``tcp_dst``,
``arp_tpa``, ...) plus a few non-OXM keys:

- ``vlan``: list of tags, outermost first, each ``{"tpid": 0x8100, "vid": 10, "pcp": 0}``; ``eth_type`` is the
  ethertype after the tags, as OpenFlow matches it, and ``vlan_vid``/``vlan_pcp`` read the outermost tag;
- ``mpls``: list of labels, outermost first, each ``{"label": 16, "tc": 0, "ttl": 64}``; ``mpls_label``/``mpls_tc``/
  ``mpls_bos`` read the outermost label and ``mpls_payload_type`` is the ethertype under the bottom label;
- ``nw_ttl`` (IPv4 TTL), ``tcp_flags``, ``tcp_seq`` (sent in the frame, not parsed back: 0 when absent) and
  ``payload`` (bytes after the last parsed header);
- ``ct_state``/``ct_zone``/``ct_mark`` (absent reads as 0) and ``ct_tuple``, which ct actions set (see the
  connection tracking section).

The switch behaves like Open vSwitch where OpenFlow leaves room: no packet buffering (packet-ins carry the frame cut to
``max_len`` and ``OFP_NO_BUFFER``), an output to the packet's own in_port is skipped unless it is ``OFPP_IN_PORT``,
and a delete's ``out_port``/``out_group`` filter unless they are ``OFPP_ANY``/``OFPG_ANY`` (os-ken's defaults are 0,
so a delete that does not set them removes nothing). Flow-mods OVS would reject (bad table, goto backwards, missing
match prerequisites, set-field without its prerequisites, ``OFPP_TABLE`` in a flow, a buffer id) raise ``SwitchError``.
Select groups (a stable hash of the 5-tuple picks the bucket, in proportion to the weights), and Open vSwitch's
``resubmit`` and ``learn`` actions are modelled, for switch-resident dispatch; a group bucket acts on a copy of the
packet, as in Open vSwitch. So is ``ct`` (IPv4, destination NAT), with ``FakeSwitch.conntrack`` as the tracker's
table. Packets-per-second drop meters are modelled as token buckets on the switch's clock (``now``): a meter refills
at its rate up to its burst, and a packet that finds it empty is dropped. Flooding and other unsupported features
raise ``NotImplementedError``.

Every flow-mod, group-mod and packet-out the switch applies (the learned entries of its ``learn`` actions included) is
checked against the declared forwarder pipeline (``nlb_sdn.flows.pipeline.check_message``); a violation raises
``PipelineViolation``, so a test whose controller builds a flow the declaration does not allow fails loudly. Tests of
the switch model itself, with flows of no particular pipeline, turn that off (``check_pipeline=False``).
"""

from __future__ import annotations

import copy
import importlib
import ipaddress
import itertools
import struct
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from nlb_sdn import framework
from nlb_sdn.flows import templates
from nlb_sdn.flows.pipeline import check_message
from nlb_sdn.framework import arp, ethernet, ipv4, nicira_ext, ofproto_v1_3, ofproto_v1_3_parser, packet, tcp, udp

_vlan = importlib.import_module(f"{framework.NAME}.lib.packet.vlan")
_mpls = importlib.import_module(f"{framework.NAME}.lib.packet.mpls")
_ipv6 = importlib.import_module(f"{framework.NAME}.lib.packet.ipv6")

ofp = ofproto_v1_3
parser = ofproto_v1_3_parser

ETH_IPV4 = 0x0800
ETH_ARP = 0x0806
ETH_IPV6 = 0x86DD
ETH_VLAN = 0x8100
ETH_QINQ = 0x88A8
ETH_MPLS = 0x8847
ETH_MPLS_MCAST = 0x8848
IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ICMPV6 = 58
TCP_SYN = 0x02
TCP_ACK = 0x10
ZERO_MAC = "00:00:00:00:00:00"
BROADCAST_MAC = "ff:ff:ff:ff:ff:ff"
NO_FLOW_COOKIE = 0xFFFF_FFFF_FFFF_FFFF

Norm = dict[str, tuple[int, int]]
"""A match as field -> (value, mask) integers; an exact field has mask -1 (all ones)."""


class SwitchError(Exception):
    """The OpenFlow error message a real switch would have answered the request with."""

    def __init__(self, type_name: str, code_name: str, reason: str) -> None:
        super().__init__(f"{type_name}/{code_name}: {reason}")
        self.type_name = type_name
        self.code_name = code_name
        self.type = getattr(ofp, type_name)
        self.code = getattr(ofp, code_name)


class PipelineViolation(AssertionError):
    """A message sent to the switch breaks the declared forwarder pipeline (``nlb_sdn.flows.pipeline.PIPELINE``)."""


class _Dropped(Exception):
    """Raised inside an action to drop the packet being traced."""


@dataclass(eq=False)
class FlowEntry:
    """One entry of a flow table, with its counters and timestamps."""

    table_id: int
    priority: int
    match: dict[str, Any]
    instructions: list[Any]
    cookie: int
    idle_timeout: int
    hard_timeout: int
    flags: int
    install_time: float
    last_hit: float
    seq: int
    n_packets: int = 0
    n_bytes: int = 0
    norm: Norm = field(default_factory=dict, repr=False)

    @property
    def is_table_miss(self) -> bool:
        """True for the priority-0 match-everything entry."""
        return self.priority == 0 and not self.match


@dataclass
class PacketIn:
    """A packet-in the switch sent to the controller."""

    table_id: int
    cookie: int
    reason: int
    max_len: int
    packet: dict[str, Any]
    data: bytes
    total_len: int
    in_port: int

    def to_msg(self, datapath: Any) -> Any:
        """The os-ken OFPPacketIn a real switch would send (match: in_port, and metadata/tunnel_id/ct_* if set)."""
        pipeline = {k: self.packet[k] for k in ("metadata", "tunnel_id", *CT_FIELDS) if self.packet.get(k)}
        match = parser.OFPMatch(in_port=self.in_port, **pipeline)
        return parser.OFPPacketIn(
            datapath,
            buffer_id=ofp.OFP_NO_BUFFER,
            total_len=self.total_len,
            reason=self.reason,
            table_id=self.table_id,
            cookie=self.cookie,
            match=match,
            data=self.data,
        )


@dataclass
class TraceResult:
    """What happened to one packet: outputs, packet-ins, the entries it hit and a readable log."""

    outputs: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    packet_ins: list[PacketIn] = field(default_factory=list)
    hits: list[FlowEntry] = field(default_factory=list)
    log: list[str] = field(default_factory=list)

    @property
    def dropped(self) -> bool:
        """True when the packet neither left a port nor reached the controller."""
        return not self.outputs and not self.packet_ins

    @property
    def ports(self) -> list[int]:
        """The output ports, in order."""
        return [port for port, _ in self.outputs]


# ---------------------------------------------------------------------------------------------------------------------
# Fields: reading, writing and normalising packet values and matches.

_FIELD_GETTERS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "vlan_vid": lambda p: ofp.OFPVID_PRESENT | p["vlan"][0]["vid"] if p.get("vlan") else ofp.OFPVID_NONE,
    "vlan_pcp": lambda p: p["vlan"][0]["pcp"] if p.get("vlan") else None,
    "mpls_label": lambda p: p["mpls"][0]["label"] if p.get("mpls") else None,
    "mpls_tc": lambda p: p["mpls"][0]["tc"] if p.get("mpls") else None,
    "mpls_bos": lambda p: int(len(p["mpls"]) == 1) if p.get("mpls") else None,
    "metadata": lambda p: p.get("metadata", 0),
    "tunnel_id": lambda p: p.get("tunnel_id", 0),
    "ct_state": lambda p: p.get("ct_state", 0),
    "ct_zone": lambda p: p.get("ct_zone", 0),
    "ct_mark": lambda p: p.get("ct_mark", 0),
    # An ICMP packet keeps its ICMP message (type, code, checksum, body) as the payload bytes.
    "icmpv4_type": lambda p: p["payload"][0] if p.get("ip_proto") == IPPROTO_ICMP and p.get("payload") else None,
    "icmpv4_code": lambda p: p["payload"][1] if p.get("ip_proto") == IPPROTO_ICMP and p.get("payload") else None,
}

_FIELD_SETTERS: dict[str, Callable[[dict[str, Any], Any], None]] = {
    "vlan_vid": lambda p, v: p["vlan"][0].update(vid=v & 0xFFF),
    "vlan_pcp": lambda p, v: p["vlan"][0].update(pcp=v),
    "mpls_label": lambda p, v: p["mpls"][0].update(label=v),
    "mpls_tc": lambda p, v: p["mpls"][0].update(tc=v),
}

_IP_TYPES = frozenset({ETH_IPV4, ETH_IPV6})
_MPLS_TYPES = frozenset({ETH_MPLS, ETH_MPLS_MCAST})
_VLAN_PRESENT = None
"""Marks a prerequisite satisfied by any VLAN tag (vlan_vid with OFPVID_PRESENT)."""

_PREREQS: dict[str, tuple[str, frozenset[int] | None]] = {
    "vlan_pcp": ("vlan_vid", _VLAN_PRESENT),
    **{f: ("eth_type", _IP_TYPES) for f in ("ip_dscp", "ip_ecn", "ip_proto")},
    **{f: ("eth_type", frozenset({ETH_IPV4})) for f in ("ipv4_src", "ipv4_dst")},
    **{f: ("eth_type", frozenset({ETH_ARP})) for f in ("arp_op", "arp_spa", "arp_tpa", "arp_sha", "arp_tha")},
    **{f: ("eth_type", frozenset({ETH_IPV6})) for f in ("ipv6_src", "ipv6_dst", "ipv6_flabel", "ipv6_exthdr")},
    **{f: ("ip_proto", frozenset({IPPROTO_TCP})) for f in ("tcp_src", "tcp_dst", "tcp_flags")},
    **{f: ("ip_proto", frozenset({IPPROTO_UDP})) for f in ("udp_src", "udp_dst")},
    **{f: ("ip_proto", frozenset({132})) for f in ("sctp_src", "sctp_dst")},
    **{f: ("ip_proto", frozenset({IPPROTO_ICMP})) for f in ("icmpv4_type", "icmpv4_code")},
    **{f: ("ip_proto", frozenset({58})) for f in ("icmpv6_type", "icmpv6_code")},
    "ipv6_nd_target": ("icmpv6_type", frozenset({135, 136})),
    "ipv6_nd_sll": ("icmpv6_type", frozenset({135})),
    "ipv6_nd_tll": ("icmpv6_type", frozenset({136})),
    **{f: ("eth_type", _MPLS_TYPES) for f in ("mpls_label", "mpls_tc", "mpls_bos")},
    "pbb_isid": ("eth_type", frozenset({0x88E7})),
}


def _oxm_int(name: str, user_value: Any) -> tuple[int, int]:
    """One OXM field's user value (plain or (value, mask)) as (value, mask) integers, mask -1 when exact."""
    _, value, mask = ofp.oxm_from_user(name, user_value)
    full = (1 << 8 * len(value)) - 1
    m = int.from_bytes(mask, "big") if mask else full
    m = -1 if m == full else m
    return int.from_bytes(value, "big") & m, m


def normalize_match(match: Any) -> Norm:
    """An OFPMatch (or a field dict) as field -> (value, mask) integers, for comparing and matching."""
    return {name: _oxm_int(name, value) for name, value in match.items()}


def field_value(pkt: dict[str, Any], name: str) -> Any:
    """The value of OXM field ``name`` in a packet dict, or None when the packet does not have it."""
    getter = _FIELD_GETTERS.get(name)
    return getter(pkt) if getter else pkt.get(name)


def matches(norm: Norm, pkt: dict[str, Any]) -> bool:
    """True when the packet dict satisfies every field of the normalised match."""
    for name, (value, mask) in norm.items():
        raw = field_value(pkt, name)
        if raw is None or _oxm_int(name, raw)[0] & mask != value:
            return False
    return True


def _covers(general: Norm, specific: Norm) -> bool:
    """True when every packet matching ``specific`` also matches ``general`` (non-strict flow-mod selection)."""
    for name, (value, mask) in general.items():
        if name not in specific:
            return False
        s_value, s_mask = specific[name]
        if s_mask & mask != mask or s_value & mask != value:
            return False
    return True


def _overlaps(a: Norm, b: Norm) -> bool:
    """True when some packet could match both normalised matches."""
    return all((a[n][0] ^ b[n][0]) & a[n][1] & b[n][1] == 0 for n in a.keys() & b.keys())


def _unmet_prereq(view: Norm, name: str, table: dict[str, tuple[str, frozenset[int] | None]]) -> str | None:
    """Why ``name`` cannot be used given what ``view`` pins down, or None when its prerequisite chain holds."""
    while name in table:
        need, allowed = table[name]
        value, mask = view.get(need, (0, 0))
        ok = bool(value & mask & ofp.OFPVID_PRESENT) if allowed is _VLAN_PRESENT else mask == -1 and value in allowed
        if not ok:
            wanted = "with a VLAN tag" if allowed is _VLAN_PRESENT else f"in {sorted(allowed)}"
            return f"{name} needs {need} {wanted}"
        name = need
    return None


# ---------------------------------------------------------------------------------------------------------------------
# Actions: a registry so new action classes (tunnel encapsulation, ...) plug in with one decorated function.

View = Norm
"""What a flow-mod's match (after earlier actions) guarantees about the packet, for static action checks."""

ORDER_POP, ORDER_PUSH_MPLS, ORDER_PUSH_VLAN, ORDER_DEC_TTL, ORDER_SET, ORDER_OUTPUT = 1, 2, 4, 6, 7, 10
"""Positions in the OpenFlow 1.3 action-set execution order (spec 5.10)."""


@dataclass(frozen=True)
class ActionKind:
    """How the fake switch validates (at flow-mod time) and executes (at trace time) one os-ken action class."""

    order: int
    check: Callable[[Any, View], None]
    apply: Callable[[Any, _Run], None]


ACTIONS: dict[type, ActionKind] = {}


def action_kind(cls: type, order: int, check: Callable[[Any, View], None]) -> Callable[[Any], Any]:
    """Decorator registering ``apply(action, run)`` as the behaviour of action class ``cls``, validated by ``check``."""

    def register(apply: Callable[[Any, _Run], None]) -> Callable[[Any, _Run], None]:
        ACTIONS[cls] = ActionKind(order, check, apply)
        return apply

    return register


def _inconsistent(reason: str) -> SwitchError:
    """The error for an action the match does not allow."""
    return SwitchError("OFPET_BAD_ACTION", "OFPBAC_MATCH_INCONSISTENT", reason)


def _require(view: View, name: str, allowed: frozenset[int] | None, what: str) -> None:
    """Raise MATCH_INCONSISTENT unless ``view`` pins field ``name`` to ``allowed`` (None: a VLAN tag is present)."""
    problem = _unmet_prereq(view, what, {what: (name, allowed)})
    if problem:
        raise _inconsistent(problem)


_SUPPORTED_RESERVED_PORTS = frozenset({ofp.OFPP_CONTROLLER, ofp.OFPP_IN_PORT, ofp.OFPP_LOCAL})


def _check_output(action: Any, view: View) -> None:
    """Reject output ports a flow entry cannot use; unsupported reserved ports raise NotImplementedError."""
    port = action.port
    if port in (0, ofp.OFPP_TABLE, ofp.OFPP_ANY):
        raise SwitchError("OFPET_BAD_ACTION", "OFPBAC_BAD_OUT_PORT", f"output to port {port:#x} in a flow entry")
    if port > ofp.OFPP_MAX and port not in _SUPPORTED_RESERVED_PORTS:
        raise NotImplementedError(f"fake switch: output to reserved port {port:#x} is not supported")


@action_kind(parser.OFPActionOutput, ORDER_OUTPUT, _check_output)
def _apply_output(action: Any, run: _Run) -> None:
    """Send a copy out of a port, to the controller, or (packet-out only) through the pipeline."""
    port = action.port
    if port == ofp.OFPP_CONTROLLER:
        run.packet_in(action.max_len)
    elif port == ofp.OFPP_TABLE:
        run.switch.pipeline(copy.deepcopy(run.packet), 0, run.result)
    elif port == ofp.OFPP_IN_PORT:
        run.emit(run.packet["in_port"])
    elif port == run.packet.get("in_port"):
        run.result.log.append(f"output:{port} skipped: it is the in_port (use OFPP_IN_PORT)")
    elif port < ofp.OFPP_MAX or port == ofp.OFPP_LOCAL:
        run.emit(port)
    else:
        raise NotImplementedError(f"fake switch: output to reserved port {port:#x} is not supported")


def _check_set_field(action: Any, view: View) -> None:
    """Require the field's prerequisites, then record the new value in the view."""
    if action.key == "ct_mark":
        raise SwitchError("OFPET_BAD_ACTION", "OFPBAC_BAD_SET_ARGUMENT", "set_field ct_mark outside a ct action")
    if action.key == "vlan_vid":
        _require(view, "vlan_vid", _VLAN_PRESENT, "set_field vlan_vid")
    problem = _unmet_prereq(view, action.key, _PREREQS)
    if problem:
        raise _inconsistent(f"set_field {problem}")
    view[action.key] = _oxm_int(action.key, action.value)


@action_kind(parser.OFPActionSetField, ORDER_SET, _check_set_field)
def _apply_set_field(action: Any, run: _Run) -> None:
    """Rewrite one header field."""
    setter = _FIELD_SETTERS.get(action.key)
    if setter:
        setter(run.packet, action.value)
    else:
        run.packet[action.key] = action.value


def _check_push_vlan(action: Any, view: View) -> None:
    """After a push the packet has a tag."""
    view["vlan_vid"] = (ofp.OFPVID_PRESENT, ofp.OFPVID_PRESENT)


@action_kind(parser.OFPActionPushVlan, ORDER_PUSH_VLAN, _check_push_vlan)
def _apply_push_vlan(action: Any, run: _Run) -> None:
    """Push a tag, copying VID and PCP from the current outer tag if any."""
    tags = run.packet.get("vlan") or []
    outer = tags[0] if tags else {"vid": 0, "pcp": 0}
    run.packet["vlan"] = [{"tpid": action.ethertype, "vid": outer["vid"], "pcp": outer["pcp"]}, *tags]


def _check_pop_vlan(action: Any, view: View) -> None:
    """Popping needs a tag; what lies under it is unknown."""
    _require(view, "vlan_vid", _VLAN_PRESENT, "pop_vlan")
    view.pop("vlan_vid")
    view.pop("vlan_pcp", None)


@action_kind(parser.OFPActionPopVlan, ORDER_POP, _check_pop_vlan)
def _apply_pop_vlan(action: Any, run: _Run) -> None:
    """Remove the outer tag."""
    if not run.packet.get("vlan"):
        raise _inconsistent("pop_vlan on an untagged packet")
    run.packet["vlan"] = run.packet["vlan"][1:]


def _check_push_mpls(action: Any, view: View) -> None:
    """After a push the ethertype is the MPLS one."""
    view["eth_type"] = (action.ethertype, -1)


@action_kind(parser.OFPActionPushMpls, ORDER_PUSH_MPLS, _check_push_mpls)
def _apply_push_mpls(action: Any, run: _Run) -> None:
    """Push a label, copying label/TC/TTL from the outer label, or TTL from the IP header for the first one."""
    pkt = run.packet
    labels = pkt.get("mpls") or []
    if labels:
        outer = dict(labels[0])
    else:
        ttl = pkt.get("nw_ttl", 64) if pkt.get("eth_type") in _IP_TYPES else 255
        outer = {"label": 0, "tc": 0, "ttl": ttl}
        pkt["mpls_payload_type"] = pkt.get("eth_type")
    pkt["mpls"] = [outer, *labels]
    pkt["eth_type"] = action.ethertype


def _check_pop_mpls(action: Any, view: View) -> None:
    """Popping needs an MPLS ethertype; afterwards the ethertype is the action's."""
    _require(view, "eth_type", _MPLS_TYPES, "pop_mpls")
    for name in ("mpls_label", "mpls_tc", "mpls_bos"):
        view.pop(name, None)
    view["eth_type"] = (action.ethertype, -1)


@action_kind(parser.OFPActionPopMpls, ORDER_POP, _check_pop_mpls)
def _apply_pop_mpls(action: Any, run: _Run) -> None:
    """Remove the outer label and set the ethertype to the action's."""
    pkt = run.packet
    if not pkt.get("mpls"):
        raise _inconsistent("pop_mpls on a packet without MPLS")
    pkt["mpls"] = pkt["mpls"][1:]
    if not pkt["mpls"]:
        pkt.pop("mpls_payload_type", None)
    pkt["eth_type"] = action.ethertype


def _check_dec_nw_ttl(action: Any, view: View) -> None:
    """Decrementing the TTL needs an IP packet."""
    _require(view, "eth_type", _IP_TYPES, "dec_nw_ttl")


@action_kind(parser.OFPActionDecNwTtl, ORDER_DEC_TTL, _check_dec_nw_ttl)
def _apply_dec_nw_ttl(action: Any, run: _Run) -> None:
    """Decrement the IP TTL; a packet whose TTL would reach 0 is dropped (invalid-TTL packet-ins are off)."""
    ttl = run.packet.get("nw_ttl", 64)
    if ttl <= 1:
        raise _Dropped(f"dec_nw_ttl: invalid ttl {ttl}")
    run.packet["nw_ttl"] = ttl - 1


def _no_check(action: Any, view: View) -> None:
    """Actions the switch accepts in any entry."""


def _check_multipath(action: Any, view: View) -> None:
    """This fake's multipath writes the low bits of ``ipv4_dst`` only (what the controller uses it for)."""
    if action.dst != "ipv4_dst" or action.ofs_nbits >> 6 != 0:
        raise NotImplementedError(f"fake switch: multipath into {action.dst} at {action.ofs_nbits:#x}")


@action_kind(parser.NXActionMultipath, ORDER_SET, _check_multipath)
def _apply_multipath(action: Any, run: _Run) -> None:
    """Write a stable hash of the 5-tuple, modulo the link count, into the low bits of the destination address."""
    pkt = run.packet
    ports = ("tcp_src", "tcp_dst") if "tcp_src" in pkt else ("udp_src", "udp_dst")
    key = "|".join(str(pkt.get(f)) for f in ("ipv4_src", "ipv4_dst", "ip_proto", *ports))
    link = zlib.crc32(key.encode()) % (action.max_link + 1)
    bits = (action.ofs_nbits & 0x3F) + 1
    address = int(ipaddress.IPv4Address(pkt["ipv4_dst"]))
    pkt["ipv4_dst"] = str(ipaddress.IPv4Address(address >> bits << bits | link))


@action_kind(parser.NXActionResubmitTable, ORDER_OUTPUT, _no_check)
def _apply_resubmit(action: Any, run: _Run) -> None:
    """Look the packet up in another table, run that entry's actions on it, and carry on here."""
    run.switch.resubmit(run, action.table_id)


def _nxm_field(name: str) -> str:
    """The OXM name of a Nicira learn field name (``ipv4_src_nxm`` -> ``ipv4_src``)."""
    return name[:-4] if name.endswith("_nxm") else name


def _check_learn(action: Any, view: View) -> None:
    """Fields a learn reads from the packet need their prerequisites in the match (OVS: MATCH_INCONSISTENT)."""
    for spec in action.specs:
        if isinstance(spec.src, tuple):
            problem = _unmet_prereq(view, _nxm_field(spec.src[0]), _PREREQS)
            if problem:
                raise _inconsistent(f"learn {problem}")


def _user_value(name: str, value: int) -> Any:
    """An integer field value in os-ken's user form (dotted IPv4, colon MAC, or the integer)."""
    if name.startswith("ipv4_"):
        return str(ipaddress.IPv4Address(value))
    if name.startswith("ipv6_"):
        return str(ipaddress.IPv6Address(value))
    if name.startswith("eth_") and name != "eth_type":
        raw = f"{value:012x}"
        return ":".join(raw[i : i + 2] for i in range(0, 12, 2))
    return value


@action_kind(parser.NXActionLearn, ORDER_OUTPUT, _check_learn)
def _apply_learn(action: Any, run: _Run) -> None:
    """Add (or replace) the flow entry the learn specs describe, from this packet's field values."""
    fields: dict[str, Any] = {}
    loads: list[Any] = []
    for spec in action.specs:
        name = _nxm_field(spec.dst[0])
        width = 8 * len(ofp.oxm_from_user(name, 0)[1])
        if isinstance(spec.src, tuple):
            raw = _oxm_int(_nxm_field(spec.src[0]), field_value(run.packet, _nxm_field(spec.src[0])))[0]
        else:
            raw = spec.src << spec.dst[1]
        mask = ((1 << spec.n_bits) - 1) << spec.dst[1]
        value = _user_value(name, raw & mask)
        if isinstance(spec, parser.NXFlowSpecLoad):
            loads.append(parser.OFPActionSetField(**{name: value}))
        elif mask == (1 << width) - 1:
            fields[name] = value
        else:
            fields[name] = (value, _user_value(name, mask))
    instructions = [parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, loads)] if loads else []
    flags = ofp.OFPFF_SEND_FLOW_REM if action.flags & 1 else 0
    run.switch.flow_mod(
        parser.OFPFlowMod(
            None,
            cookie=action.cookie,
            table_id=action.table_id,
            command=ofp.OFPFC_ADD,
            idle_timeout=action.idle_timeout,
            hard_timeout=action.hard_timeout,
            priority=action.priority,
            buffer_id=ofp.OFP_NO_BUFFER,
            flags=flags,
            match=parser.OFPMatch(**fields),
            instructions=instructions,
        )
    )
    run.result.log.append(f"learn table={action.table_id} {fields}")


@action_kind(parser.OFPActionGroup, ORDER_OUTPUT, _no_check)
def _apply_group(action: Any, run: _Run) -> None:
    """Run the group: a select group runs one bucket, chosen by a stable hash of the 5-tuple, on a copy."""
    group = run.switch.groups.get(action.group_id)
    if group is None:
        raise _Dropped(f"group {action.group_id} does not exist")
    run.switch.run_group(group, run)


# ---------------------------------------------------------------------------------------------------------------------
# Connection tracking: Open vSwitch's ct action (IPv4 only) and the ct_state/ct_zone/ct_mark fields.
#
# A ct action looks the packet up in its zone: trk plus new (untracked, or no reply seen yet: Linux's rule) or est,
# plus rpl for replies, plus dnat/snat when its nat rewrote the packet; ct_mark is the connection's (0 untracked). A
# commit creates the connection with the nested nat's destination (range minimum) and takes a nested ct_mark. The
# packet keeps the tuple it was looked up with (``ct_tuple``), so a later ct in the zone finds the same connection after
# NAT, as the kernel does. As in Open vSwitch, the packet then goes on with the rest of its actions untracked (ct fields
# cleared) and, with ``recirc_table`` set, a copy with the ct fields set (and the action set) runs from that table once
# the current pass is over.

NX_CT_F_COMMIT = nicira_ext.NX_CT_F_COMMIT
NX_CT_RECIRC_NONE = nicira_ext.NX_CT_RECIRC_NONE
NX_NAT_F_SRC, NX_NAT_F_DST = 1, 2
"""Open vSwitch's nat flags (os-ken's nicira_ext does not define them)."""
CT_NEW, CT_EST, CT_REL, CT_RPL, CT_INV, CT_TRK, CT_SNAT, CT_DNAT = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80
"""The ct_state bits."""
CT_FIELDS = ("ct_state", "ct_zone", "ct_mark")
_L4_PORTS = {IPPROTO_TCP: ("tcp_src", "tcp_dst"), IPPROTO_UDP: ("udp_src", "udp_dst")}


class CtTuple(NamedTuple):
    """A connection's tuple in one direction, within its zone (ports 0 for protocols other than TCP and UDP)."""

    zone: int
    ip_proto: int
    src: str
    dst: str
    sport: int
    dport: int


@dataclass
class Connection:
    """A tracked connection: its original-direction tuple, its destination NAT, its mark, and whether a reply passed."""

    orig: CtTuple
    nat_ip: str | None = None
    nat_port: int | None = None
    mark: int = 0
    replied: bool = False

    @property
    def nats(self) -> bool:
        """True when the connection has a destination NAT."""
        return self.nat_ip is not None or self.nat_port is not None

    @property
    def reply(self) -> CtTuple:
        """The tuple replies carry: from the NAT target (or the original destination) back to the client."""
        o = self.orig
        dport = o.dport if self.nat_port is None else self.nat_port
        return CtTuple(o.zone, o.ip_proto, self.nat_ip or o.dst, o.src, dport, o.sport)


def _ct_tuple(pkt: dict[str, Any], zone: int) -> CtTuple:
    """The packet's tuple in ``zone``; the fake tracker handles IPv4 and IPv6."""
    if pkt.get("eth_type") not in _IP_TYPES:
        raise NotImplementedError("fake switch: ct on a packet that is not IP")
    family = "ipv6" if pkt["eth_type"] == ETH_IPV6 else "ipv4"
    ports = _L4_PORTS.get(pkt.get("ip_proto", 0))
    sport, dport = (pkt[ports[0]], pkt[ports[1]]) if ports else (0, 0)
    return CtTuple(zone, pkt.get("ip_proto", 0), pkt[f"{family}_src"], pkt[f"{family}_dst"], sport, dport)


def _rewrite(pkt: dict[str, Any], end: str, ip: str, port: int) -> None:
    """Set the packet's source (``end`` "src") or destination ("dst") address and, for TCP/UDP, port."""
    pkt[f"{'ipv6' if pkt['eth_type'] == ETH_IPV6 else 'ipv4'}_{end}"] = ip
    ports = _L4_PORTS.get(pkt.get("ip_proto", 0))
    if ports:
        pkt[ports[0] if end == "src" else ports[1]] = port


def _wire_check(action: Any) -> None:
    """Refuse a ct action whose os-ken serialisation does not parse back (os-ken does not pad a nested nat action)."""
    buf = bytearray()
    action.serialize(buf, 0)
    buf += bytes(action.len - len(buf))
    try:
        parsed = parser.OFPAction.parser(bytes(buf), 0)
        ok = [type(a) for a in parsed.actions] == [type(a) for a in action.actions]
    except Exception:  # noqa: BLE001 - os-ken's parsers raise AssertionError, struct.error, even bare Exception
        ok = False  # any failure to parse back means the wire form is broken
    if not ok:
        raise SwitchError(
            "OFPET_BAD_ACTION",
            "OFPBAC_BAD_LEN",
            "ct's nested actions do not survive serialisation (os-ken leaves a nat action unpadded "
            "when another action follows it: put the nat last, or make its length a multiple of 8)",
        )


def _check_ct(action: Any, view: View) -> None:
    """Open vSwitch's checks: an IP match (IPv4 for a nat range), nested nat and ct_mark only, arguments need commit."""
    _require(view, "eth_type", _IP_TYPES, "ct")
    if action.zone_src or action.alg:
        raise NotImplementedError("fake switch: ct with a zone from a field or an alg is not supported")
    commit = action.flags & NX_CT_F_COMMIT
    for nested in action.actions:
        if isinstance(nested, parser.NXActionNAT):
            ranged = nested.range_ipv4_min or nested.range_ipv6_min
            if nested.flags & NX_NAT_F_SRC or (ranged and not nested.flags & NX_NAT_F_DST):
                raise NotImplementedError("fake switch: only destination NAT is modelled")
            if nested.range_ipv4_min:
                _require(view, "eth_type", frozenset({ETH_IPV4}), "nat to an IPv4 range")
            if nested.range_ipv6_min:
                _require(view, "eth_type", frozenset({ETH_IPV6}), "nat to an IPv6 range")
            plain = not nested.flags and not ranged and nested.range_proto_min is None
        elif isinstance(nested, parser.OFPActionSetField) and nested.key == "ct_mark":
            plain = False
        else:
            raise SwitchError("OFPET_BAD_ACTION", "OFPBAC_BAD_ARGUMENT", f"ct cannot nest {type(nested).__name__}")
        if not plain and not commit:
            raise SwitchError(
                "OFPET_BAD_ACTION",
                "OFPBAC_BAD_ARGUMENT",
                "ct needs commit for actions other than nat without arguments",
            )
    _wire_check(action)


@action_kind(parser.NXActionCT, ORDER_OUTPUT, _check_ct)
def _apply_ct(action: Any, run: _Run) -> None:
    """Track the packet, queue its copy for ``recirc_table`` if set, and go on with the packet untracked."""
    pkt = run.packet
    run.switch.track(action, pkt, run.result)
    if action.recirc_table != NX_CT_RECIRC_NONE:
        run.recirculated.append((copy.deepcopy(pkt), action.recirc_table, dict(run.action_set)))
    for name in CT_FIELDS:
        pkt.pop(name, None)


@action_kind(parser.NXActionCTClear, ORDER_SET, _no_check)
def _apply_ct_clear(action: Any, run: _Run) -> None:
    """Forget the packet's tracker state (its headers stay as the tracker left them)."""
    for name in CT_FIELDS:
        run.packet.pop(name, None)


_BUCKET_ENDS = (parser.OFPActionOutput, parser.OFPActionGroup, parser.NXActionResubmitTable)
"""A bucket runs as an action set in Open vSwitch: with one of these in it, its ct actions are dropped."""


def _action_kind(action: Any) -> ActionKind:
    """The registered behaviour of an action, or NotImplementedError."""
    kind = ACTIONS.get(type(action))
    if kind is None:
        raise NotImplementedError(f"fake switch: action {type(action).__name__} is not supported")
    return kind


def _action_set_key(action: Any) -> Any:
    """The action set holds one action per type, and one set-field per field."""
    return ("set_field", action.key) if isinstance(action, parser.OFPActionSetField) else type(action)


# ---------------------------------------------------------------------------------------------------------------------
# Pipeline

_INSTRUCTION_ORDER = {
    ofp.OFPIT_METER: -1,
    ofp.OFPIT_APPLY_ACTIONS: 0,
    ofp.OFPIT_CLEAR_ACTIONS: 1,
    ofp.OFPIT_WRITE_ACTIONS: 2,
    ofp.OFPIT_WRITE_METADATA: 3,
    ofp.OFPIT_GOTO_TABLE: 4,
}
"""The order OpenFlow 1.3 executes an entry's instructions in, whatever their order in the flow-mod."""


@dataclass
class Meter:
    """A pktps drop meter as a token bucket: ``tokens`` refill at ``rate`` per second up to ``burst``."""

    meter_id: int
    rate: int
    burst: int
    tokens: float
    refilled_at: float
    passed: int = 0
    dropped: int = 0

    def take(self, now: float) -> None:
        """Let one packet through, or drop it (``_Dropped``) when the bucket is empty."""
        self.tokens = min(float(self.burst), self.tokens + (now - self.refilled_at) * self.rate)
        self.refilled_at = now
        if self.tokens < 1:
            self.dropped += 1
            raise _Dropped(f"meter {self.meter_id}: over its rate")
        self.tokens -= 1
        self.passed += 1


class _Run:
    """One packet's walk through the pipeline: the packet as rewritten so far, its action set and the current entry."""

    def __init__(self, switch: FakeSwitch, pkt: dict[str, Any], result: TraceResult) -> None:
        self.switch = switch
        self.packet = pkt
        self.result = result
        self.action_set: dict[Any, Any] = {}
        self.entry: FlowEntry | None = None
        self.recirculated: list[tuple[dict[str, Any], int, dict[Any, Any]]] = []
        """Copies ct actions sent on, as (packet, table, action set), to run once this pass is over."""

    def apply(self, actions: Iterable[Any]) -> None:
        """Execute actions in order on the packet."""
        for action in actions:
            _action_kind(action).apply(action, self)

    def emit(self, port: int) -> None:
        """Record a copy of the packet leaving ``port``."""
        self.result.outputs.append((port, copy.deepcopy(self.packet)))
        self.result.log.append(f"output:{port}")

    def packet_in(self, max_len: int) -> None:
        """Record a packet-in carrying the frame cut to ``max_len`` (no buffering, like Open vSwitch)."""
        data = packet_to_bytes(self.packet)
        entry = self.entry
        if entry is None:
            table_id, cookie, reason = ofp.OFPTT_ALL, NO_FLOW_COOKIE, ofp.OFPR_ACTION
        else:
            table_id, cookie = entry.table_id, entry.cookie
            reason = ofp.OFPR_NO_MATCH if entry.is_table_miss else ofp.OFPR_ACTION
        cut = data if max_len == ofp.OFPCML_NO_BUFFER else data[:max_len]
        self.result.packet_ins.append(
            PacketIn(
                table_id, cookie, reason, max_len, copy.deepcopy(self.packet), cut, len(data), self.packet["in_port"]
            )
        )
        self.result.log.append(f"packet-in table={table_id} cookie={cookie:#x} reason={reason} max_len={max_len}")


# ---------------------------------------------------------------------------------------------------------------------
# The switch and the datapath


class FakeSwitch:
    """Flow tables 0..n_tables-1 with OpenFlow 1.3 flow-mod semantics and a packet tracer."""

    def __init__(self, n_tables: int = 255, datapath: Any = None, check_pipeline: bool = True) -> None:
        self.n_tables = n_tables
        self.datapath = datapath
        self.check_pipeline = check_pipeline
        """Whether every flow-mod, group-mod and packet-out must keep to the declared pipeline."""
        self.tables: list[list[FlowEntry]] = [[] for _ in range(n_tables)]
        self.now = 0.0
        self.flow_removed: list[Any] = []
        self.packet_outs: list[TraceResult] = []
        self.stats_requests: list[Any] = []
        self.port_desc_requests: list[Any] = []
        """Port description requests received (the controller reads port states on connect)."""
        self.groups: dict[int, Any] = {}
        self.meters: dict[int, Meter] = {}
        self._seq = itertools.count()
        self.conntrack: dict[CtTuple, Connection] = {}
        """Tracked connections by original-direction tuple; they never expire (tests delete them, or ct_flush)."""
        self._ct_replies: dict[CtTuple, Connection] = {}

    # -- messages -----------------------------------------------------------------------------------------------------

    def receive(self, msg: Any) -> None:
        """Apply one os-ken message object as a switch would."""
        if isinstance(msg, parser.OFPFlowMod):
            self.flow_mod(msg)
        elif isinstance(msg, parser.OFPPacketOut):
            self.packet_out(msg)
        elif isinstance(msg, parser.OFPGroupMod):
            self.group_mod(msg)
        elif isinstance(msg, parser.OFPMeterMod):
            self.meter_mod(msg)
        elif isinstance(msg, parser.OFPFlowStatsRequest):
            self.stats_requests.append(msg)
        elif isinstance(msg, parser.OFPPortDescStatsRequest):
            self.port_desc_requests.append(msg)
        elif not isinstance(msg, parser.OFPBarrierRequest):
            raise NotImplementedError(f"fake switch: {type(msg).__name__} is not supported")

    def keeps_to_pipeline(self, msg: Any) -> None:
        """Raise PipelineViolation when ``msg`` breaks the declared pipeline (unless ``check_pipeline`` is off)."""
        violations = check_message(msg) if self.check_pipeline else []
        if violations:
            raise PipelineViolation(
                f"{type(msg).__name__} breaks the pipeline declared in nlb_sdn/flows/pipeline.py:\n"
                + "".join(f"  {violation}\n" for violation in violations)
                + str(msg)
            )

    def group_mod(self, msg: Any) -> None:
        """Apply an OFPGroupMod (select groups only); deleting a group removes the entries that use it."""
        self.keeps_to_pipeline(msg)
        if msg.command == ofp.OFPGC_DELETE:
            self.groups.pop(msg.group_id, None)
            for table in self.tables:
                table[:] = [e for e in table if msg.group_id not in _groups_of(e)]
            return
        if msg.type != ofp.OFPGT_SELECT:
            raise NotImplementedError("fake switch: only select groups are supported")
        exists = msg.group_id in self.groups
        if msg.command == ofp.OFPGC_ADD and exists:
            raise SwitchError("OFPET_GROUP_MOD_FAILED", "OFPGMFC_GROUP_EXISTS", f"group {msg.group_id}")
        if msg.command == ofp.OFPGC_MODIFY and not exists:
            raise SwitchError("OFPET_GROUP_MOD_FAILED", "OFPGMFC_UNKNOWN_GROUP", f"group {msg.group_id}")
        self.groups[msg.group_id] = msg

    def meter_mod(self, msg: Any) -> None:
        """Apply an OFPMeterMod (one pktps drop band); deleting a meter removes the entries that use it, as OVS does."""
        self.keeps_to_pipeline(msg)
        if msg.command == ofp.OFPMC_DELETE:
            gone = set(self.meters) if msg.meter_id == ofp.OFPM_ALL else {msg.meter_id}
            for meter_id in gone:
                self.meters.pop(meter_id, None)
            for table in self.tables:
                table[:] = [e for e in table if not gone & _meters_of(e)]
            return
        exists = msg.meter_id in self.meters
        if msg.command == ofp.OFPMC_ADD and exists:
            raise SwitchError("OFPET_METER_MOD_FAILED", "OFPMMFC_METER_EXISTS", f"meter {msg.meter_id}")
        if msg.command == ofp.OFPMC_MODIFY and not exists:
            raise SwitchError("OFPET_METER_MOD_FAILED", "OFPMMFC_UNKNOWN_METER", f"meter {msg.meter_id}")
        if (
            not msg.flags & ofp.OFPMF_PKTPS
            or len(msg.bands) != 1
            or not isinstance(msg.bands[0], parser.OFPMeterBandDrop)
        ):
            raise NotImplementedError("fake switch: only pktps meters with one drop band are supported")
        band = msg.bands[0]
        burst = band.burst_size if msg.flags & ofp.OFPMF_BURST else band.rate
        self.meters[msg.meter_id] = Meter(msg.meter_id, band.rate, burst, float(burst), self.now)

    def run_group(self, group: Any, run: _Run) -> None:
        """Run one bucket of a select group on a copy of the packet (weights honoured, 5-tuple hash)."""
        buckets = [b for b in group.buckets for _ in range(b.weight)]
        if not buckets:
            run.result.log.append(f"group {group.group_id}: no bucket, drop")
            return
        pkt = run.packet
        # Like Open vSwitch's dp_hash: addresses, and the ports of TCP only (UDP ports are left out).
        family = ("ipv6_src", "ipv6_dst") if "ipv6_src" in pkt else ("ipv4_src", "ipv4_dst")
        key = "|".join(str(pkt.get(f)) for f in (*family, "tcp_src", "tcp_dst"))
        bucket = buckets[zlib.crc32(key.encode()) % len(buckets)]
        branch = _Run(self, copy.deepcopy(pkt), run.result)
        branch.entry = run.entry
        branch.recirculated = run.recirculated
        run.result.log.append(f"group {group.group_id}: bucket {group.buckets.index(bucket)}")
        actions = bucket.actions
        if any(isinstance(a, _BUCKET_ENDS) for a in actions):
            kept = [a for a in actions if not isinstance(a, parser.NXActionCT)]
            if len(kept) < len(actions):
                run.result.log.append(f"group {group.group_id}: ct skipped (the bucket outputs, groups or resubmits)")
            actions = kept
        branch.apply(actions)

    def resubmit(self, run: _Run, table_id: int) -> None:
        """Look ``run``'s packet up in ``table_id`` and run the entry's apply actions (and goto chain) on it."""
        entry = self.lookup(table_id, run.packet)
        caller = run.entry
        while entry is not None:
            entry.n_packets += 1
            entry.last_hit = self.now
            run.result.hits.append(entry)
            run.result.log.append(f"resubmit table {table_id}: priority={entry.priority} {entry.match}")
            run.entry = entry
            goto = self._run_instructions(entry, run)
            entry = self.lookup(goto, run.packet) if goto is not None else None
            table_id = goto if goto is not None else table_id
        run.entry = caller

    def flow_stats(self) -> list[tuple[int, int, dict[str, Any], int]]:
        """Every entry as (table_id, priority, match fields, cookie), the way a flow-stats reply lists them."""
        return [(e.table_id, e.priority, dict(e.match), e.cookie) for e in self.dump_flows()]

    def flow_mod(self, fm: Any) -> None:
        """Apply an OFPFlowMod: add, modify(-strict) or delete(-strict)."""
        self.keeps_to_pipeline(fm)
        if fm.buffer_id != ofp.OFP_NO_BUFFER:
            raise SwitchError("OFPET_BAD_REQUEST", "OFPBRC_BUFFER_UNKNOWN", "the fake switch buffers no packets")
        norm = normalize_match(fm.match)
        for name in norm:
            problem = _unmet_prereq(norm, name, _PREREQS)
            if problem:
                raise SwitchError("OFPET_BAD_MATCH", "OFPBMC_BAD_PREREQ", problem)
        command = fm.command
        if command in (ofp.OFPFC_DELETE, ofp.OFPFC_DELETE_STRICT):
            self._delete(fm, norm, strict=command == ofp.OFPFC_DELETE_STRICT)
            return
        if command not in (ofp.OFPFC_ADD, ofp.OFPFC_MODIFY, ofp.OFPFC_MODIFY_STRICT):
            raise SwitchError("OFPET_FLOW_MOD_FAILED", "OFPFMFC_BAD_COMMAND", f"command {command}")
        if fm.table_id >= self.n_tables:
            raise SwitchError("OFPET_FLOW_MOD_FAILED", "OFPFMFC_BAD_TABLE_ID", f"table {fm.table_id}")
        self._check_instructions(fm.instructions, fm.table_id, norm)
        if command == ofp.OFPFC_ADD:
            self._add(fm, norm)
        else:
            self._modify(fm, norm, strict=command == ofp.OFPFC_MODIFY_STRICT)

    def packet_out(self, msg: Any) -> TraceResult:
        """Apply an OFPPacketOut: run its actions on its data (OFPP_TABLE enters table 0); also kept in packet_outs."""
        self.keeps_to_pipeline(msg)
        if msg.buffer_id != ofp.OFP_NO_BUFFER:
            raise SwitchError("OFPET_BAD_REQUEST", "OFPBRC_BUFFER_UNKNOWN", "the fake switch buffers no packets")
        data = msg.data
        if isinstance(data, packet.Packet):
            data.serialize()
            data = data.data
        result = TraceResult()
        run = _Run(self, packet_from_bytes(bytes(data), in_port=msg.in_port), result)
        try:
            run.apply(msg.actions)
        except _Dropped as drop:
            result.log.append(f"dropped: {drop}")
        self._recirculate(run)
        self.packet_outs.append(result)
        return result

    # -- tracing -------------------------------------------------------------------------------------------------------

    def trace(self, pkt: dict[str, Any], in_port: int, table: int = 0) -> TraceResult:
        """Send a copy of ``pkt`` into the pipeline at ``table`` from ``in_port``; counters and last_hit are updated."""
        start = copy.deepcopy(pkt)
        start["in_port"] = in_port
        result = TraceResult()
        self.pipeline(start, table, result)
        return result

    def pipeline(self, pkt: dict[str, Any], table_id: int, result: TraceResult) -> None:
        """Run ``pkt`` (carrying in_port) from ``table_id`` to the end, then the copies its ct actions recirculated."""
        run = _Run(self, pkt, result)
        self._walk(run, table_id)
        self._recirculate(run)

    def _recirculate(self, run: _Run) -> None:
        """Run the copies ``run``'s ct actions recirculated, in order, each from its table with its action set."""
        for pkt, table_id, action_set in run.recirculated:
            again = _Run(self, pkt, run.result)
            again.action_set = action_set
            run.result.log.append(f"recirculation to table {table_id}")
            self._walk(again, table_id)
            self._recirculate(again)

    def _walk(self, run: _Run, table_id: int) -> None:
        """Run ``run``'s packet from ``table_id`` to the end of the pipeline, the action set last."""
        result = run.result
        try:
            while True:
                entry = self.lookup(table_id, run.packet)
                if entry is None:
                    result.log.append(f"table {table_id}: no match, drop")
                    return
                entry.n_packets += 1
                entry.n_bytes += len(packet_to_bytes(run.packet))
                entry.last_hit = self.now
                result.hits.append(entry)
                result.log.append(f"table {table_id}: priority={entry.priority} cookie={entry.cookie:#x} {entry.match}")
                run.entry = entry
                goto = self._run_instructions(entry, run)
                if goto is None:
                    run.apply(sorted(run.action_set.values(), key=lambda a: _action_kind(a).order))
                    return
                table_id = goto
        except _Dropped as drop:
            result.log.append(f"dropped: {drop}")

    def lookup(self, table_id: int, pkt: dict[str, Any]) -> FlowEntry | None:
        """The entry of ``table_id`` the packet hits: highest priority, then first installed."""
        hits = [e for e in self.tables[table_id] if matches(e.norm, pkt)]
        return min(hits, key=lambda e: (-e.priority, e.seq), default=None)

    @staticmethod
    def _run_instructions(entry: FlowEntry, run: _Run) -> int | None:
        """Execute the entry's instructions in OpenFlow order; the goto table, or None at the end of the pipeline."""
        goto = None
        for inst in sorted(entry.instructions, key=lambda i: _INSTRUCTION_ORDER[i.type]):
            if inst.type == ofp.OFPIT_METER:
                run.switch.meters[inst.meter_id].take(run.switch.now)
            elif inst.type == ofp.OFPIT_APPLY_ACTIONS:
                run.apply(inst.actions)
            elif inst.type == ofp.OFPIT_CLEAR_ACTIONS:
                run.action_set.clear()
            elif inst.type == ofp.OFPIT_WRITE_ACTIONS:
                run.action_set.update((_action_set_key(a), a) for a in inst.actions)
            elif inst.type == ofp.OFPIT_WRITE_METADATA:
                old = run.packet.get("metadata", 0)
                run.packet["metadata"] = (old & ~inst.metadata_mask) | (inst.metadata & inst.metadata_mask)
            else:
                goto = inst.table_id
        return goto

    # -- connection tracking -------------------------------------------------------------------------------------------

    def track(self, action: Any, pkt: dict[str, Any], result: TraceResult) -> None:
        """Look ``pkt`` up in the ct action's zone, commit and NAT it if asked, and set its ct fields."""
        zone = action.zone_ofs_nbits
        cached = pkt.get("ct_tuple")
        key = cached if cached is not None and cached.zone == zone else _ct_tuple(pkt, zone)
        pkt["ct_tuple"] = key
        conn = self.conntrack.get(key)
        reply = None if conn is not None else self._ct_replies.get(key)
        if reply is not None and self.conntrack.get(reply.orig) is reply:
            conn = reply
            conn.replied = True
            state = CT_TRK | CT_EST | CT_RPL
        else:
            state = CT_TRK | (CT_EST if conn is not None and conn.replied else CT_NEW)
        nat = next((a for a in action.actions if isinstance(a, parser.NXActionNAT)), None)
        if action.flags & NX_CT_F_COMMIT:
            if conn is None:
                conn = Connection(key)
                if nat is not None and nat.flags & NX_NAT_F_DST:
                    conn.nat_ip = nat.range_ipv4_min or nat.range_ipv6_min or None
                    conn.nat_port = nat.range_proto_min
                self.conntrack[key] = conn
                self._ct_replies[conn.reply] = conn
            for nested in action.actions:
                if isinstance(nested, parser.OFPActionSetField):
                    conn.mark = nested.value
        if nat is not None and conn is not None and conn.nats:
            if state & CT_RPL:
                _rewrite(pkt, "src", conn.orig.dst, conn.orig.dport)
                state |= CT_SNAT
            else:
                _rewrite(pkt, "dst", conn.reply.src, conn.reply.sport)
                state |= CT_DNAT
        pkt.update(ct_state=state, ct_zone=zone, ct_mark=conn.mark if conn is not None else 0)
        commit = "commit," if action.flags & NX_CT_F_COMMIT else ""
        result.log.append(f"ct({commit}zone={zone}): ct_state={state:#x} ct_mark={pkt['ct_mark']:#x}")

    def ct_flush(self, zone: int | None = None) -> None:
        """Forget every tracked connection, or those of one zone (``ovs-appctl dpctl/flush-conntrack``)."""
        for key in [k for k in self.conntrack if zone is None or k.zone == zone]:
            del self.conntrack[key]
        self._ct_replies = {c.reply: c for c in self.conntrack.values()}

    # -- inspection and time -------------------------------------------------------------------------------------------

    def dump_flows(self, table: int | None = None) -> list[FlowEntry]:
        """Entries of one table (or all), by table, then priority descending, then install order."""
        tables = self.tables if table is None else [self.tables[table]]
        return [e for t in tables for e in sorted(t, key=lambda e: (-e.priority, e.seq))]

    def flow_count(self, table: int | None = None, cookie: int | None = None, cookie_mask: int | None = None) -> int:
        """How many entries (of one table or all) have ``cookie`` under ``cookie_mask`` (exact cookie without mask)."""
        entries = self.dump_flows(table)
        if cookie is None:
            return len(entries)
        mask = -1 if cookie_mask is None else cookie_mask
        return sum(1 for e in entries if (e.cookie ^ cookie) & mask == 0)

    def expire(self, now: float) -> list[Any]:
        """Advance the clock to ``now``, remove timed-out entries; OFPFlowRemoved for those with OFPFF_SEND_FLOW_REM."""
        self.now = now
        removed = []
        for table in self.tables:
            for entry in list(table):
                if entry.hard_timeout and now - entry.install_time >= entry.hard_timeout:
                    reason = ofp.OFPRR_HARD_TIMEOUT
                elif entry.idle_timeout and now - entry.last_hit >= entry.idle_timeout:
                    reason = ofp.OFPRR_IDLE_TIMEOUT
                else:
                    continue
                table.remove(entry)
                if entry.flags & ofp.OFPFF_SEND_FLOW_REM:
                    removed.append(self._flow_removed_msg(entry, reason))
        self.flow_removed.extend(removed)
        return removed

    # -- flow-mod internals --------------------------------------------------------------------------------------------

    def _check_instructions(self, instructions: list[Any], table_id: int, norm: Norm) -> None:
        """Validate instructions and actions the way Open vSwitch does when the flow is installed."""
        view = dict(norm)
        written: list[Any] = []
        for group_id in _groups_in(instructions):
            if group_id not in self.groups:
                raise SwitchError("OFPET_BAD_ACTION", "OFPBAC_BAD_OUT_GROUP", f"group {group_id} does not exist")
        for inst in instructions:
            if isinstance(inst, parser.OFPInstructionGotoTable):
                if not table_id < inst.table_id < self.n_tables:
                    raise SwitchError(
                        "OFPET_BAD_INSTRUCTION", "OFPBIC_BAD_TABLE_ID", f"goto {inst.table_id} from table {table_id}"
                    )
            elif isinstance(inst, parser.OFPInstructionActions):
                if inst.type == ofp.OFPIT_APPLY_ACTIONS:
                    for action in inst.actions:
                        _action_kind(action).check(action, view)
                elif inst.type == ofp.OFPIT_WRITE_ACTIONS:
                    written.extend(inst.actions)
            elif isinstance(inst, parser.OFPInstructionMeter):
                if inst.meter_id not in self.meters:
                    raise SwitchError("OFPET_METER_MOD_FAILED", "OFPMMFC_UNKNOWN_METER", f"meter {inst.meter_id}")
            elif not isinstance(inst, parser.OFPInstructionWriteMetadata):
                raise NotImplementedError(f"fake switch: instruction {type(inst).__name__} is not supported")
        for action in sorted(written, key=lambda a: _action_kind(a).order):
            _action_kind(action).check(action, view)

    def _add(self, fm: Any, norm: Norm) -> None:
        """OFPFC_ADD: refuse overlaps if asked; replace an identical entry, keeping its counters unless RESET_COUNTS."""
        table = self.tables[fm.table_id]
        same_priority = [e for e in table if e.priority == fm.priority]
        if fm.flags & ofp.OFPFF_CHECK_OVERLAP and any(_overlaps(e.norm, norm) for e in same_priority):
            raise SwitchError("OFPET_FLOW_MOD_FAILED", "OFPFMFC_OVERLAP", f"priority {fm.priority} {fm.match}")
        entry = FlowEntry(
            table_id=fm.table_id,
            priority=fm.priority,
            match=dict(fm.match.items()),
            instructions=list(fm.instructions),
            cookie=fm.cookie,
            idle_timeout=fm.idle_timeout,
            hard_timeout=fm.hard_timeout,
            flags=fm.flags,
            install_time=self.now,
            last_hit=self.now,
            seq=next(self._seq),
            norm=norm,
        )
        old = next((e for e in same_priority if e.norm == norm), None)
        if old is not None:
            table.remove(old)
            if not fm.flags & ofp.OFPFF_RESET_COUNTS:
                entry.n_packets, entry.n_bytes = old.n_packets, old.n_bytes
        table.append(entry)

    def _modify(self, fm: Any, norm: Norm, strict: bool) -> None:
        """OFPFC_MODIFY(_STRICT): replace the instructions of selected entries; nothing is added when none match."""
        for entry in self._select([fm.table_id], fm, norm, strict):
            entry.instructions = list(fm.instructions)
            if fm.flags & ofp.OFPFF_RESET_COUNTS:
                entry.n_packets = entry.n_bytes = 0

    def _delete(self, fm: Any, norm: Norm, strict: bool) -> None:
        """OFPFC_DELETE(_STRICT), with OFPTT_ALL, cookie mask and out_port/out_group filters."""
        if fm.table_id == ofp.OFPTT_ALL:
            table_ids = list(range(self.n_tables))
        elif fm.table_id < self.n_tables:
            table_ids = [fm.table_id]
        else:
            raise SwitchError("OFPET_FLOW_MOD_FAILED", "OFPFMFC_BAD_TABLE_ID", f"table {fm.table_id}")
        for entry in self._select(table_ids, fm, norm, strict):
            if _outputs_to(entry, fm.out_port) and fm.out_group == ofp.OFPG_ANY:
                self.tables[entry.table_id].remove(entry)
                if entry.flags & ofp.OFPFF_SEND_FLOW_REM:
                    self.flow_removed.append(self._flow_removed_msg(entry, ofp.OFPRR_DELETE))

    def _select(self, table_ids: list[int], fm: Any, norm: Norm, strict: bool) -> list[FlowEntry]:
        """Entries a modify/delete applies to: strict = same match and priority, else at least as specific."""
        selected = []
        for table_id in table_ids:
            for entry in self.tables[table_id]:
                if (entry.cookie ^ fm.cookie) & fm.cookie_mask:
                    continue
                if (entry.norm == norm and entry.priority == fm.priority) if strict else _covers(norm, entry.norm):
                    selected.append(entry)
        return selected

    def _flow_removed_msg(self, entry: FlowEntry, reason: int) -> Any:
        """The os-ken OFPFlowRemoved a real switch would send for ``entry``."""
        duration = self.now - entry.install_time
        return parser.OFPFlowRemoved(
            self.datapath,
            cookie=entry.cookie,
            priority=entry.priority,
            reason=reason,
            table_id=entry.table_id,
            duration_sec=int(duration),
            duration_nsec=int(duration % 1 * 1e9),
            idle_timeout=entry.idle_timeout,
            hard_timeout=entry.hard_timeout,
            packet_count=entry.n_packets,
            byte_count=entry.n_bytes,
            match=parser.OFPMatch(**entry.match),
        )


def _groups_in(instructions: list[Any]) -> set[int]:
    """The groups the instructions' actions send to."""
    return {
        a.group_id
        for inst in instructions
        if isinstance(inst, parser.OFPInstructionActions)
        for a in inst.actions
        if isinstance(a, parser.OFPActionGroup)
    }


def _meters_of(entry: FlowEntry) -> set[int]:
    """The meters an entry's packets go through."""
    return {inst.meter_id for inst in entry.instructions if isinstance(inst, parser.OFPInstructionMeter)}


def _groups_of(entry: FlowEntry) -> set[int]:
    """The groups an entry sends to."""
    return _groups_in(entry.instructions)


def _outputs_to(entry: FlowEntry, port: int) -> bool:
    """True when ``port`` is OFPP_ANY or one of the entry's apply/write actions outputs to it."""
    if port == ofp.OFPP_ANY:
        return True
    return any(
        isinstance(a, parser.OFPActionOutput) and a.port == port
        for inst in entry.instructions
        if isinstance(inst, parser.OFPInstructionActions)
        for a in inst.actions
    )


class FakeDatapath:
    """Stands in for an os-ken Datapath: builds messages with the real parser, applies what is sent to a FakeSwitch."""

    def __init__(self, dpid: int, n_tables: int = 255, check_pipeline: bool = True) -> None:
        self.id = dpid
        self.ofproto = ofproto_v1_3
        self.ofproto_parser = ofproto_v1_3_parser
        self.sent: list[Any] = []
        self.xid = 0
        self.switch = FakeSwitch(n_tables, datapath=self, check_pipeline=check_pipeline)

    def set_xid(self, msg: Any) -> int:
        """Give ``msg`` the next xid, as a Datapath does before serialising it."""
        self.xid += 1
        msg.set_xid(self.xid)
        return self.xid

    def send_msg(self, msg: Any) -> bool:
        """Record the message in ``sent``, then apply it to the switch (errors raise SwitchError)."""
        self.sent.append(msg)
        self.switch.receive(msg)
        return True

    def send(self, buf: bytes) -> bool:
        """Raw bytes, as the shell sends prepared messages: each message is parsed back, then sent as by send_msg."""
        for msg in parse_messages(buf):
            self.send_msg(msg)
        return True


OFP_HEADER = struct.Struct(ofp.OFP_HEADER_PACK_STR)


def parse_messages(buf: bytes) -> list[Any]:
    """The controller-to-switch messages in ``buf``, parsed with the framework's parsers (packet-outs by ours)."""
    msgs, offset = [], 0
    while offset < len(buf):
        version, msg_type, length, xid = OFP_HEADER.unpack_from(buf, offset)
        wire = bytes(buf[offset : offset + length])
        if msg_type == ofp.OFPT_PACKET_OUT:
            msgs.append(templates.parse_packet_out(wire))
        elif msg_type == ofp.OFPT_FLOW_MOD:
            msgs.append(parser.OFPFlowMod.parser(None, version, msg_type, length, xid, wire))
        else:
            raise NotImplementedError(f"fake switch: raw message type {msg_type} is not supported")
        offset += length
    return msgs


# ---------------------------------------------------------------------------------------------------------------------
# Packets: dict builders and conversion to and from frames with the framework's packet library.


def make_packet(**fields: Any) -> dict[str, Any]:
    """A packet dict from header values, inferring eth_type/ip_proto and filling the defaults frames decode to."""
    pkt: dict[str, Any] = {"eth_src": ZERO_MAC, "eth_dst": ZERO_MAC, "vlan": [], "mpls": [], **fields}
    if "eth_type" not in pkt:
        if any(k.startswith("arp_") for k in pkt):
            pkt["eth_type"] = ETH_ARP
        elif any(k.startswith(("ipv6_", "icmpv6_")) for k in pkt):
            pkt["eth_type"] = ETH_IPV6
        elif any(k.startswith(("ipv4_", "ip_", "tcp_", "udp_")) for k in pkt) or "nw_ttl" in pkt:
            pkt["eth_type"] = ETH_IPV4
        else:
            pkt["eth_type"] = 0
    if pkt["mpls"]:
        pkt.setdefault("mpls_payload_type", ETH_IPV4)
    l3 = pkt["mpls_payload_type"] if pkt["mpls"] else pkt["eth_type"]
    if l3 == ETH_ARP:
        for name, default in (
            ("arp_op", 1),
            ("arp_sha", pkt["eth_src"]),
            ("arp_spa", "0.0.0.0"),
            ("arp_tha", ZERO_MAC),
            ("arp_tpa", "0.0.0.0"),
        ):
            pkt.setdefault(name, default)
        return pkt
    if l3 == ETH_IPV6:
        return _ipv6_defaults(pkt)
    if l3 == ETH_IPV4:
        if "ip_proto" not in pkt:
            tcp_like = any(k.startswith("tcp_") for k in pkt)
            udp_like = any(k.startswith("udp_") for k in pkt)
            pkt["ip_proto"] = IPPROTO_TCP if tcp_like else IPPROTO_UDP if udp_like else 0
        for name, default in (
            ("ipv4_src", "0.0.0.0"),
            ("ipv4_dst", "0.0.0.0"),
            ("ip_dscp", 0),
            ("ip_ecn", 0),
            ("nw_ttl", 64),
        ):
            pkt.setdefault(name, default)
        if pkt["ip_proto"] == IPPROTO_TCP:
            for name in ("tcp_src", "tcp_dst", "tcp_flags"):
                pkt.setdefault(name, 0)
        elif pkt["ip_proto"] == IPPROTO_UDP:
            for name in ("udp_src", "udp_dst"):
                pkt.setdefault(name, 0)
    pkt.setdefault("payload", b"")
    return pkt


def _ipv6_defaults(pkt: dict[str, Any]) -> dict[str, Any]:
    """Fill the defaults of an IPv6 packet dict (TCP, or ICMPv6 with its type and the rest of its body as payload)."""
    if "ip_proto" not in pkt:
        pkt["ip_proto"] = IPPROTO_ICMPV6 if "icmpv6_type" in pkt else IPPROTO_TCP
    for name, default in (("ipv6_src", "::"), ("ipv6_dst", "::"), ("ip_dscp", 0), ("ip_ecn", 0), ("nw_ttl", 64)):
        pkt.setdefault(name, default)
    if pkt["ip_proto"] == IPPROTO_TCP:
        for name in ("tcp_src", "tcp_dst", "tcp_flags"):
            pkt.setdefault(name, 0)
    elif pkt["ip_proto"] == IPPROTO_ICMPV6:
        pkt.setdefault("icmpv6_type", 0)
    pkt.setdefault("payload", b"")
    return pkt


def tcp6_packet(
    eth_src: str,
    eth_dst: str,
    ipv6_src: str,
    ipv6_dst: str,
    tcp_src: int,
    tcp_dst: int,
    tcp_flags: int = TCP_SYN,
    **fields: Any,
) -> dict[str, Any]:
    """An IPv6/TCP packet dict (a SYN by default)."""
    return make_packet(
        eth_src=eth_src,
        eth_dst=eth_dst,
        eth_type=ETH_IPV6,
        ip_proto=IPPROTO_TCP,
        ipv6_src=ipv6_src,
        ipv6_dst=ipv6_dst,
        tcp_src=tcp_src,
        tcp_dst=tcp_dst,
        tcp_flags=tcp_flags,
        **fields,
    )


def tcp_packet(
    eth_src: str,
    eth_dst: str,
    ipv4_src: str,
    ipv4_dst: str,
    tcp_src: int,
    tcp_dst: int,
    tcp_flags: int = TCP_SYN,
    **fields: Any,
) -> dict[str, Any]:
    """An IPv4/TCP packet dict (a SYN by default)."""
    return make_packet(
        eth_src=eth_src,
        eth_dst=eth_dst,
        eth_type=ETH_IPV4,
        ip_proto=IPPROTO_TCP,
        ipv4_src=ipv4_src,
        ipv4_dst=ipv4_dst,
        tcp_src=tcp_src,
        tcp_dst=tcp_dst,
        tcp_flags=tcp_flags,
        **fields,
    )


def arp_packet(
    arp_op: int,
    eth_src: str,
    arp_spa: str,
    arp_tpa: str,
    eth_dst: str = BROADCAST_MAC,
    arp_tha: str = ZERO_MAC,
    **fields: Any,
) -> dict[str, Any]:
    """An ARP packet dict (op 1 request, 2 reply) with arp_sha = eth_src unless given."""
    return make_packet(
        eth_src=eth_src,
        eth_dst=eth_dst,
        eth_type=ETH_ARP,
        arp_op=arp_op,
        arp_spa=arp_spa,
        arp_tpa=arp_tpa,
        arp_tha=arp_tha,
        **fields,
    )


def packet_to_bytes(pkt: dict[str, Any]) -> bytes:
    """An Ethernet frame (VLAN tags, MPLS labels, ARP or IPv4 with TCP/UDP, payload) for a packet dict."""
    frame = packet.Packet()
    tags = pkt.get("vlan") or []
    labels = pkt.get("mpls") or []
    eth_type = pkt.get("eth_type", 0)
    types = [tag["tpid"] for tag in tags] + [eth_type]
    frame.add_protocol(
        ethernet.ethernet(dst=pkt.get("eth_dst", ZERO_MAC), src=pkt.get("eth_src", ZERO_MAC), ethertype=types[0])
    )
    for tag, next_type in zip(tags, types[1:], strict=True):
        vlan_cls = _vlan.svlan if tag["tpid"] == ETH_QINQ else _vlan.vlan
        frame.add_protocol(vlan_cls(pcp=tag.get("pcp", 0), cfi=0, vid=tag["vid"], ethertype=next_type))
    for i, label in enumerate(labels):
        frame.add_protocol(
            _mpls.mpls(
                label=label["label"], exp=label.get("tc", 0), bsb=int(i == len(labels) - 1), ttl=label.get("ttl", 64)
            )
        )
    l3 = pkt.get("mpls_payload_type", ETH_IPV4) if labels else eth_type
    if l3 == ETH_ARP:
        frame.add_protocol(
            arp.arp(
                opcode=pkt.get("arp_op", 1),
                src_mac=pkt.get("arp_sha", ZERO_MAC),
                src_ip=pkt.get("arp_spa", "0.0.0.0"),
                dst_mac=pkt.get("arp_tha", ZERO_MAC),
                dst_ip=pkt.get("arp_tpa", "0.0.0.0"),
            )
        )
    elif l3 in _IP_TYPES:
        proto = pkt.get("ip_proto", 0)
        frame.add_protocol(_ip_header(pkt, l3, proto))
        if proto == IPPROTO_ICMPV6:
            frame.add_protocol(bytes([pkt.get("icmpv6_type", 0)]))
        if proto == IPPROTO_TCP:
            frame.add_protocol(
                tcp.tcp(
                    src_port=pkt.get("tcp_src", 0),
                    dst_port=pkt.get("tcp_dst", 0),
                    bits=pkt.get("tcp_flags", 0),
                    seq=pkt.get("tcp_seq", 0),
                    ack=pkt.get("tcp_ack", 0),
                    window_size=0xFFFF,
                )
            )
        elif proto == IPPROTO_UDP:
            frame.add_protocol(udp.udp(src_port=pkt.get("udp_src", 0), dst_port=pkt.get("udp_dst", 0)))
    payload = pkt.get("payload", b"")
    if payload:
        frame.add_protocol(payload)
    frame.serialize()
    return bytes(frame.data)


def _ip_header(pkt: dict[str, Any], l3: int, proto: int) -> Any:
    """The IPv4 or IPv6 header of a packet dict."""
    tos = pkt.get("ip_dscp", 0) << 2 | pkt.get("ip_ecn", 0)
    if l3 == ETH_IPV6:
        return _ipv6.ipv6(
            traffic_class=tos,
            hop_limit=pkt.get("nw_ttl", 64),
            nxt=proto,
            src=pkt.get("ipv6_src", "::"),
            dst=pkt.get("ipv6_dst", "::"),
        )
    return ipv4.ipv4(
        tos=tos,
        ttl=pkt.get("nw_ttl", 64),
        proto=proto,
        src=pkt.get("ipv4_src", "0.0.0.0"),
        dst=pkt.get("ipv4_dst", "0.0.0.0"),
    )


def packet_from_bytes(data: bytes, in_port: int | None = None) -> dict[str, Any]:
    """A packet dict from an Ethernet frame; Ethernet padding after ARP/IPv4 is dropped."""
    eth, _, rest = ethernet.ethernet.parser(bytes(data))
    pkt: dict[str, Any] = {"eth_src": eth.src, "eth_dst": eth.dst, "vlan": [], "mpls": []}
    if in_port is not None:
        pkt["in_port"] = in_port
    eth_type = eth.ethertype
    while eth_type in (ETH_VLAN, ETH_QINQ):
        tag, _, rest = _vlan.vlan.parser(rest)
        pkt["vlan"].append({"tpid": eth_type, "vid": tag.vid, "pcp": tag.pcp})
        eth_type = tag.ethertype
    pkt["eth_type"] = l3 = eth_type
    if eth_type in _MPLS_TYPES:
        bottom = False
        while not bottom:
            label, _, rest = _mpls.mpls.parser(rest)
            pkt["mpls"].append({"label": label.label, "tc": label.exp, "ttl": label.ttl})
            bottom = bool(label.bsb)
        pkt["mpls_payload_type"] = l3 = ETH_IPV4 if rest[:1] and rest[0] >> 4 == 4 else 0
    if l3 == ETH_ARP:
        msg, _, _ = arp.arp.parser(rest)
        pkt.update(arp_op=msg.opcode, arp_sha=msg.src_mac, arp_spa=msg.src_ip, arp_tha=msg.dst_mac, arp_tpa=msg.dst_ip)
        return pkt
    if l3 == ETH_IPV6:
        ip6, _, rest = _ipv6.ipv6.parser(rest)
        pkt.update(
            ipv6_src=ip6.src,
            ipv6_dst=ip6.dst,
            ip_proto=ip6.nxt,
            ip_dscp=ip6.traffic_class >> 2,
            ip_ecn=ip6.traffic_class & 3,
            nw_ttl=ip6.hop_limit,
        )
        if ip6.nxt == IPPROTO_ICMPV6:
            pkt["icmpv6_type"], rest = rest[0], rest[1:]
        elif ip6.nxt == IPPROTO_TCP:
            seg, _, rest = tcp.tcp.parser(rest)
            pkt.update(tcp_src=seg.src_port, tcp_dst=seg.dst_port, tcp_flags=seg.bits)
    if l3 == ETH_IPV4:
        ip, _, rest = ipv4.ipv4.parser(rest)
        pkt.update(
            ipv4_src=ip.src, ipv4_dst=ip.dst, ip_proto=ip.proto, ip_dscp=ip.tos >> 2, ip_ecn=ip.tos & 3, nw_ttl=ip.ttl
        )
        if ip.proto == IPPROTO_TCP:
            seg, _, rest = tcp.tcp.parser(rest)
            pkt.update(tcp_src=seg.src_port, tcp_dst=seg.dst_port, tcp_flags=seg.bits)
        elif ip.proto == IPPROTO_UDP:
            dgram, _, rest = udp.udp.parser(rest)
            pkt.update(udp_src=dgram.src_port, udp_dst=dgram.dst_port)
    pkt["payload"] = bytes(rest)
    return pkt
