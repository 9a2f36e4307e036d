"""The forwarder pipeline, declared once as data: tables, priorities, cookie layout, and a checker of built messages.

``PIPELINE`` declares every table: its purpose, the match fields its flows may use, where its flows may send a
packet on (``Hop``: goto, resubmit, ct, the select group), what its miss entry does, the named priorities it uses,
the cookie kinds that may own its flows and the meters (``MeterKind``) its punts may go through. ``check_message``
lists how a built message (flow-mod, prepared template, group-mod, meter-mod, packet-out) breaks that declaration;
the fake OpenFlow switch of the tests runs it on every message it applies. ``render_markdown`` writes the tables
section of docs/pipeline.md (``python -m nlb_sdn.flows.pipeline``).
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import Enum, IntEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any

from nlb_sdn.framework import nicira_ext, ofproto_v1_3 as ofp, ofproto_v1_3_parser as parser


class Table(IntEnum):
    """Forwarder tables, in pipeline order."""

    CLASSIFY = 0
    CONNECTIONS = 1
    REVERSE = 2
    FORWARD = 3
    SWITCH_CONNECTIONS = 4
    SWITCH_REVERSE = 5
    SWITCH_SELECT = 6
    TUNNEL = 7
    CT_FORWARD = 8
    CT_REVERSE = 9


class NamedPriority(int):
    """A flow priority that knows the name it is declared under in ``Priority`` (it is an int everywhere else)."""

    name: str
    span: int
    """How far above ``value`` the entries of this name may go (0: exactly ``value``; longest-prefix routes use
    ``value`` + prefix length)."""

    def __new__(cls, value: int, name: str = "", span: int = 0) -> NamedPriority:
        """The priority ``value``, named ``name`` (``Priority`` names it when the class is created)."""
        priority = super().__new__(cls, value)
        priority.name = name
        priority.span = span
        return priority

    def __set_name__(self, owner: type, name: str) -> None:
        """Take the attribute name; binding one priority under a second name (an alias) is refused."""
        if self.name:
            raise TypeError(f"{owner.__name__}.{name} would alias {owner.__name__}.{self.name}: declare a new priority")
        self.name = name


class Priority:
    """Flow priorities by name; within a table, higher wins. Which table may use which is declared in ``PIPELINE``.

    One name, one value. Names of different tables may share a value; within one table no two names do.
    """

    MISS = NamedPriority(0)
    NEW_CONNECTION = NamedPriority(1)
    SWITCH_SYN = NamedPriority(2)
    ETH_TYPE = NamedPriority(10)
    FORWARD = NamedPriority(10)
    TUNNEL_LABEL = NamedPriority(10)
    SWITCH_DISPATCH = NamedPriority(100)
    VIP_DATAGRAM = NamedPriority(120)
    VIP_OTHER = NamedPriority(150)
    ICMP = NamedPriority(160)
    SESSION = NamedPriority(150)
    CT_REPLY = NamedPriority(190)
    VIP_SERVICE = NamedPriority(200)
    CONNECTION = NamedPriority(200)
    CT_AUDIT = NamedPriority(205)
    VIP_SYN = NamedPriority(210)
    CT_END = NamedPriority(210)
    PREFIX_ROUTE = NamedPriority(20, span=33)
    """Table 3 routes toward a gateway's prefixes: 20 + the prefix length, and 53 for a fabric host's own address."""
    PROBE_REPLY = NamedPriority(250)
    ARP = NamedPriority(300)


class CookieKind(IntEnum):
    """Bits 63-56 of every cookie: which kind of flow it is."""

    BASE = 0x01
    NAT = 0x02
    TUNNEL = 0x03
    SESSION = 0x04
    FABRIC = 0x05


KIND_SHIFT = 56
COOKIE_CACHE_SIZE = 65536
LBU_SHIFT = 48
VIP_SHIFT = 32
KIND_MASK = 0xFF << KIND_SHIFT
LBU_MASK = 0xFF << LBU_SHIFT
VIP_MASK = 0xFFFF << VIP_SHIFT
ENDPOINT_MASK = 0xFFFFFFFF
MAX_VIP_ID = 0xFFFF


@dataclass(frozen=True, slots=True)
class Cookie:
    """A decoded cookie: kind, installing LBU, VIP service id and endpoint id."""

    kind: int
    lbu_id: int
    vip_id: int
    endpoint_id: int

    @classmethod
    def decode(cls, value: int) -> Cookie:
        """Split a 64-bit cookie into its fields."""
        return cls(
            kind=(value >> KIND_SHIFT) & 0xFF,
            lbu_id=(value >> LBU_SHIFT) & 0xFF,
            vip_id=(value >> VIP_SHIFT) & 0xFFFF,
            endpoint_id=value & ENDPOINT_MASK,
        )


@functools.lru_cache(maxsize=COOKIE_CACHE_SIZE)
def make_cookie(kind: CookieKind, lbu_id: int = 0, vip_id: int = 0, endpoint_id: int = 0) -> int:
    """Pack a 64-bit cookie: kind (63-56), LBU id (55-48), VIP service id (47-32), endpoint id (31-0).

    Cached: every connection to one member carries the same cookie, and sharing one int object instead of making a
    36-byte one per connection keeps the controller's memory per tracked connection down.
    """
    if not 0 <= lbu_id <= 0xFF or not 0 <= vip_id <= MAX_VIP_ID or not 0 <= endpoint_id <= ENDPOINT_MASK:
        raise ValueError(f"cookie field out of range: lbu={lbu_id} vip={vip_id} endpoint={endpoint_id}")
    return (int(kind) << KIND_SHIFT) | (lbu_id << LBU_SHIFT) | (vip_id << VIP_SHIFT) | endpoint_id


# -- meters ------------------------------------------------------------------------------------------------------------


class MeterKind(Enum):
    """Which punt path a meter bounds; every switch has one meter of each kind (``VIP_SYN``: one per VIP service)."""

    VIP_SYN = "vip_syn"
    MISS = "miss"
    CONTROL = "control"


MISS_METER_ID = 1
"""The meter of a switch's table-miss punts (table 1 ``NEW_CONNECTION``, table 4's miss)."""
CONTROL_METER_ID = 2
"""The meter of a switch's ARP and health-probe-reply punts (table 0)."""
VIP_METER_BASE = 0x10000
"""A VIP service's SYN meter is ``VIP_METER_BASE + vip_id`` (vip ids are 16 bits: 0x10000-0x1ffff)."""
METER_BURST_DIVISOR = 4
"""A meter's burst is a quarter second of its rate."""


def vip_meter_id(vip_id: int) -> int:
    """The id of the meter on a VIP service's SYN punts."""
    if not 0 <= vip_id <= MAX_VIP_ID:
        raise ValueError(f"vip id out of range: {vip_id}")
    return VIP_METER_BASE + vip_id


def meter_kind(meter_id: int) -> MeterKind | None:
    """The kind of a meter id of the scheme above, or None for an id outside it."""
    if meter_id == MISS_METER_ID:
        return MeterKind.MISS
    if meter_id == CONTROL_METER_ID:
        return MeterKind.CONTROL
    if VIP_METER_BASE <= meter_id <= VIP_METER_BASE + MAX_VIP_ID:
        return MeterKind.VIP_SYN
    return None


# -- the declaration ---------------------------------------------------------------------------------------------------


class Via(Enum):
    """How a packet goes on from a flow (or a packet-out, or a group bucket) to another table."""

    GOTO = "goto"
    RESUBMIT = "resubmit"
    CT = "ct"
    GROUP = "group"
    OUTPUT_TABLE = "output:TABLE"


@dataclass(frozen=True, slots=True)
class Hop:
    """A packet goes on at ``table`` by ``via``."""

    table: int
    via: Via

    def __str__(self) -> str:
        """As the docs write it: ``goto 3``."""
        return f"{self.via.value} {int(self.table)}"


@dataclass(frozen=True, slots=True)
class Miss:
    """What a table's miss entry (priority MISS, empty match) does: go on at ``hops``, punt, or (neither) drop."""

    hops: tuple[Hop, ...] = ()
    to_controller: bool = False

    def __str__(self) -> str:
        """As the docs write it: ``resubmit 4, goto 3``, ``controller`` or ``drop``."""
        actions = [str(hop) for hop in self.hops] + (["controller"] if self.to_controller else [])
        return ", ".join(actions) or "drop"


DROP = Miss()


@dataclass(frozen=True, slots=True)
class TableSpec:
    """One table, declared: its purpose and what its flows may match, do, be ranked by and be owned by."""

    table: Table
    purpose: str
    match_fields: frozenset[str]
    hops: tuple[Hop, ...]
    miss: Miss
    priorities: tuple[NamedPriority, ...]
    cookie_kinds: frozenset[CookieKind]
    learns_into: frozenset[Table] = frozenset()
    meters: frozenset[MeterKind] = frozenset()

    def priority_named(self, value: int) -> NamedPriority | None:
        """The table's priority of ``value``, or None when the table declares none."""
        return next((p for p in self.priorities if p <= value <= p + p.span), None)


TCP_IPV4 = frozenset({"eth_type", "ip_proto", "ipv4_src", "ipv4_dst", "tcp_src", "tcp_dst"})
"""The match fields of a TCP/IPv4 connection (or of a client, a member, a VIP service: some of them)."""
L4_IPV4 = TCP_IPV4 | {"udp_src", "udp_dst"}
"""The match fields of a TCP/IPv4 connection or a UDP/IPv4 flow (``flows/l4.py``)."""
TCP_IPV6 = frozenset({"eth_type", "ip_proto", "ipv6_src", "ipv6_dst", "tcp_src", "tcp_dst"})
"""The match fields of a TCP/IPv6 connection (dual stack: the tables that take one take the other)."""
TCP_IP = TCP_IPV4 | TCP_IPV6
"""The match fields of a TCP connection of either family."""
L4_IP = L4_IPV4 | TCP_IPV6
"""The match fields of a TCP connection of either family or a UDP/IPv4 flow."""
OXM_FIELD_NAMES = frozenset(field.name for field in ofp.oxm_types)
"""Every match field the framework knows (OpenFlow basic and Nicira extensions)."""

GROUP_BUCKET_HOPS: tuple[Hop, ...] = (Hop(Table.SWITCH_SELECT, Via.RESUBMIT),)
"""Where a VIP's select group sends a packet: every bucket loads reg0 and resubmits to table 6."""
PACKET_OUT_HOPS: tuple[Hop, ...] = (
    Hop(Table.CLASSIFY, Via.OUTPUT_TABLE),
    Hop(Table.FORWARD, Via.RESUBMIT),
    Hop(Table.TUNNEL, Via.RESUBMIT),
)
"""Where a controller's packet-out may enter the pipeline: table 0 as if just arrived, or a connection's own actions
(nat: table 3, tunnel: table 7)."""

_TABLES = (
    TableSpec(
        Table.CLASSIFY,
        "Every packet enters here: ARP, neighbour solicitations and probe replies to the controller, VIP services "
        "to 1, conntrack members' replies through the tracker, other IPv4 and IPv6 to 2, MPLS to 7; ICMP for VIPs to "
        "the controller.",
        L4_IP | {"icmpv4_type", "icmpv6_type"},
        (
            Hop(Table.CONNECTIONS, Via.GOTO),
            Hop(Table.REVERSE, Via.GOTO),
            Hop(Table.TUNNEL, Via.GOTO),
            Hop(Table.CT_REVERSE, Via.CT),
        ),
        DROP,
        (
            Priority.ARP,
            Priority.PROBE_REPLY,
            Priority.VIP_SERVICE,
            Priority.CT_REPLY,
            Priority.ICMP,
            Priority.VIP_OTHER,
            Priority.ETH_TYPE,
            Priority.MISS,
        ),
        frozenset({CookieKind.BASE}),
        meters=frozenset({MeterKind.CONTROL}),
    ),
    TableSpec(
        Table.CONNECTIONS,
        "Client to VIP: the controller's connection and session entries, SYN punts (UDP: datagram punts below the "
        "flow entries), and the entries of switch-dispatched VIP services.",
        L4_IP | {"tcp_flags"},
        (
            Hop(Table.SWITCH_CONNECTIONS, Via.RESUBMIT),
            Hop(Table.FORWARD, Via.GOTO),
            Hop(Table.TUNNEL, Via.GOTO),
            Hop(Table.CT_FORWARD, Via.CT),
        ),
        Miss((Hop(Table.SWITCH_CONNECTIONS, Via.RESUBMIT), Hop(Table.FORWARD, Via.GOTO))),
        (
            Priority.VIP_SYN,
            Priority.CONNECTION,
            Priority.SESSION,
            Priority.VIP_DATAGRAM,
            Priority.SWITCH_DISPATCH,
            Priority.NEW_CONNECTION,
            Priority.MISS,
        ),
        frozenset({CookieKind.BASE, CookieKind.NAT, CookieKind.TUNNEL, CookieKind.SESSION}),
        meters=frozenset({MeterKind.VIP_SYN, MeterKind.MISS}),
    ),
    TableSpec(
        Table.REVERSE,
        "Other IPv4 and IPv6: the controller's reverse entries rewrite a member's replies back to the VIP.",
        L4_IP,
        (Hop(Table.SWITCH_REVERSE, Via.RESUBMIT), Hop(Table.FORWARD, Via.GOTO)),
        Miss((Hop(Table.SWITCH_REVERSE, Via.RESUBMIT), Hop(Table.FORWARD, Via.GOTO))),
        (Priority.CONNECTION, Priority.SESSION, Priority.MISS),
        frozenset({CookieKind.BASE, CookieKind.NAT, CookieKind.SESSION}),
    ),
    TableSpec(
        Table.FORWARD,
        "Out of the port toward the destination MAC, along the host's shortest-path tree; packets a member sends to a "
        "gateway's fabric-side MAC are routed by prefix (longest wins) toward its router.",
        frozenset({"eth_dst", "eth_type", "ipv4_dst"}),
        (),
        DROP,
        (Priority.PREFIX_ROUTE, Priority.FORWARD, Priority.MISS),
        frozenset({CookieKind.BASE, CookieKind.FABRIC}),
    ),
    TableSpec(
        Table.SWITCH_CONNECTIONS,
        "Connections and clients the switch learned (dispatch switch, learn pinning); a new SYN goes to the VIP's "
        "select group.",
        L4_IP | {"tcp_flags"},
        (Hop(Table.SWITCH_SELECT, Via.GROUP),),
        Miss(to_controller=True),
        (Priority.CONNECTION, Priority.SESSION, Priority.SWITCH_SYN, Priority.MISS),
        frozenset({CookieKind.BASE, CookieKind.NAT, CookieKind.SESSION}),
        meters=frozenset({MeterKind.MISS}),
    ),
    TableSpec(
        Table.SWITCH_REVERSE,
        "Reverse entries the switch learned: a member's replies rewritten to the VIP.",
        L4_IP,
        (),
        DROP,
        (Priority.CONNECTION, Priority.SESSION, Priority.MISS),
        frozenset({CookieKind.BASE, CookieKind.NAT, CookieKind.SESSION}),
    ),
    TableSpec(
        Table.SWITCH_SELECT,
        "One entry per member of a switch-dispatched VIP, chosen by the bucket's reg0: pins the connection (learn, "
        "or ct commit) and sends it toward the member.",
        frozenset({"eth_type", "ip_proto", "reg0", "ipv4_dst", "ipv6_dst", "tcp_dst", "udp_dst"}),
        (Hop(Table.FORWARD, Via.RESUBMIT),),
        DROP,
        (Priority.CONNECTION, Priority.MISS),
        frozenset({CookieKind.BASE}),
        learns_into=frozenset({Table.SWITCH_CONNECTIONS, Table.SWITCH_REVERSE}),
    ),
    TableSpec(
        Table.TUNNEL,
        "A fabric host's MPLS label: toward the host, popped on the host's own edge.",
        frozenset({"eth_type", "mpls_label"}),
        (),
        DROP,
        (Priority.TUNNEL_LABEL, Priority.MISS),
        frozenset({CookieKind.BASE, CookieKind.FABRIC}),
    ),
    TableSpec(
        Table.CT_FORWARD,
        "Client to VIP after the tracker (conntrack pinning): tracked connections to their member, FIN and RST "
        "copied, audit entries, new SYNs to the VIP's select group.",
        L4_IP | {"tcp_flags", "ct_state", "ct_mark"},
        (
            Hop(Table.SWITCH_CONNECTIONS, Via.RESUBMIT),
            Hop(Table.FORWARD, Via.RESUBMIT),
            Hop(Table.SWITCH_SELECT, Via.GROUP),
        ),
        Miss((Hop(Table.SWITCH_CONNECTIONS, Via.RESUBMIT), Hop(Table.FORWARD, Via.RESUBMIT))),
        (Priority.CT_END, Priority.CT_AUDIT, Priority.CONNECTION, Priority.SWITCH_DISPATCH, Priority.MISS),
        frozenset({CookieKind.BASE, CookieKind.NAT}),
    ),
    TableSpec(
        Table.CT_REVERSE,
        "A conntrack member's replies after the tracker: tracked ones back to the VIP (RST copied), the rest on to "
        "table 2.",
        L4_IP | {"tcp_flags", "ct_state"},
        (Hop(Table.FORWARD, Via.RESUBMIT), Hop(Table.REVERSE, Via.RESUBMIT)),
        Miss((Hop(Table.REVERSE, Via.RESUBMIT),)),
        (Priority.CT_END, Priority.CONNECTION, Priority.MISS),
        frozenset({CookieKind.BASE}),
    ),
)

PIPELINE: Mapping[int, TableSpec] = MappingProxyType({spec.table: spec for spec in _TABLES})
"""Every table of the forwarder, by table id."""


class PipelineDeclarationError(ValueError):
    """The pipeline declaration contradicts itself (see ``declaration_errors``)."""


def declaration_errors(pipeline: Mapping[int, TableSpec]) -> list[str]:
    """How a pipeline declaration contradicts itself or OpenFlow; empty when it is sound."""
    errors = [f"table {int(t)} is not declared" for t in Table if t not in pipeline]
    meanings: dict[str, tuple[int, int]] = {}
    for table_id, spec in pipeline.items():
        where = f"table {int(table_id)}"
        errors += [f"{where} is declared as table {int(spec.table)}"] if spec.table != table_id else []
        errors += _priority_errors(where, spec, meanings)
        errors += [
            f"{where}: {field!r} is no OpenFlow match field"
            for field in sorted(spec.match_fields)
            if field not in OXM_FIELD_NAMES
        ]
        for hop in spec.hops:
            if hop.table not in pipeline:
                errors.append(f"{where}: {hop} leads to an undeclared table")
            if hop.via == Via.GOTO and hop.table <= table_id:
                errors.append(f"{where}: {hop} goes backwards (OpenFlow's goto only goes forward)")
            if hop.via == Via.GROUP and Hop(hop.table, Via.RESUBMIT) not in GROUP_BUCKET_HOPS:
                errors.append(f"{where}: {hop} is not where the select group's buckets go")
            if hop.via == Via.OUTPUT_TABLE:
                errors.append(f"{where}: {hop}: output to TABLE is for packet-outs only")
        errors += [
            f"{where}: miss {hop} is not among the table's hops" for hop in spec.miss.hops if hop not in spec.hops
        ]
        errors += [f"{where}: learns into undeclared table {int(t)}" for t in spec.learns_into if t not in pipeline]
    return errors


def _priority_errors(where: str, spec: TableSpec, meanings: dict[str, tuple[int, int]]) -> list[str]:
    """Aliases within the table, a name that means another value elsewhere (``meanings``: name -> (value, table))."""
    errors = [] if Priority.MISS in spec.priorities else [f"{where} has no MISS priority"]
    by_value: dict[int, str] = {}
    for priority in spec.priorities:
        if int(priority) in by_value:
            errors.append(f"{where}: {by_value[int(priority)]} and {priority.name} are both {int(priority)} (aliases)")
        by_value[int(priority)] = priority.name
        value, first = meanings.setdefault(priority.name, (int(priority), int(spec.table)))
        if value != priority:
            errors.append(f"{where}: {priority.name} is {int(priority)} here but {value} in table {first}")
    return errors


_ERRORS = declaration_errors(PIPELINE)
if _ERRORS:
    raise PipelineDeclarationError("; ".join(_ERRORS))


# -- the checker -------------------------------------------------------------------------------------------------------


class ViolationKind(Enum):
    """What a message does that the pipeline declaration does not allow."""

    UNKNOWN_TABLE = "unknown table"
    MATCH_FIELD = "match field not allowed"
    NEXT_TABLE = "next table not declared"
    PRIORITY = "priority not declared"
    COOKIE_KIND = "cookie kind not allowed"
    MISS = "miss entry not as declared"
    METER = "meter not declared"


@dataclass(frozen=True, slots=True)
class Violation:
    """One way a message breaks the pipeline declaration (``table``: the table it concerns, None for none)."""

    kind: ViolationKind
    table: int | None
    detail: str

    def __str__(self) -> str:
        """One line for a failure message."""
        where = "" if self.table is None else f" in table {self.table}"
        return f"{self.kind.value}{where}: {self.detail}"


EXACT_PRIORITY_COMMANDS = frozenset({ofp.OFPFC_ADD, ofp.OFPFC_MODIFY_STRICT, ofp.OFPFC_DELETE_STRICT})
"""Flow-mod commands whose priority is the entry's (non-strict modify and delete ignore it)."""
INSTRUCTING_COMMANDS = frozenset({ofp.OFPFC_ADD, ofp.OFPFC_MODIFY, ofp.OFPFC_MODIFY_STRICT})
"""Flow-mod commands whose instructions go into the table."""


def check_messages(msgs: Iterable[Any]) -> list[Violation]:
    """Every violation of every message, in order."""
    return [violation for msg in msgs for violation in check_message(msg)]


def check_message(msg: Any) -> list[Violation]:
    """How a built message breaks the declared pipeline: empty when it keeps to it, and for other message types.

    Flow-mods (the framework's and ``templates``' prepared ones), group-mods, meter-mods and packet-outs are checked.
    """
    if isinstance(msg, parser.OFPFlowMod):
        return check_flow_mod(msg)
    if isinstance(msg, parser.OFPMeterMod):
        unknown = msg.meter_id != ofp.OFPM_ALL and meter_kind(msg.meter_id) is None
        return (
            [Violation(ViolationKind.METER, None, f"meter id {msg.meter_id:#x} is outside the scheme")]
            if unknown
            else []
        )
    if isinstance(msg, parser.OFPGroupMod):
        return [
            Violation(ViolationKind.NEXT_TABLE, None, f"a bucket of group {msg.group_id} goes on by {hop}")
            for bucket in msg.buckets
            for hop in _action_hops(bucket.actions)
            if hop not in GROUP_BUCKET_HOPS
        ]
    if isinstance(msg, parser.OFPPacketOut):
        return [
            Violation(ViolationKind.NEXT_TABLE, None, f"a packet-out goes on by {hop}")
            for hop in _action_hops(msg.actions)
            if hop not in PACKET_OUT_HOPS
        ]
    return []


def check_flow_mod(fm: Any) -> list[Violation]:
    """How a flow-mod breaks the declaration of its table (a delete from every table has none to break)."""
    if fm.table_id == ofp.OFPTT_ALL and fm.command not in INSTRUCTING_COMMANDS:
        return []
    spec = PIPELINE.get(fm.table_id)
    if spec is None:
        return [Violation(ViolationKind.UNKNOWN_TABLE, fm.table_id, f"a flow-mod (command {fm.command}) names it")]
    fields = [name for name, _value in fm.match.items()]
    priority = fm.priority if fm.command in EXACT_PRIORITY_COMMANDS else None
    owned = fm.command == ofp.OFPFC_ADD or fm.cookie_mask & KIND_MASK == KIND_MASK
    violations = _entry_violations(spec, fields, priority, fm.cookie if owned else None, "")
    if fm.command in INSTRUCTING_COMMANDS:
        violations += _instruction_violations(spec, fm.instructions)
    if fm.command == ofp.OFPFC_ADD and fm.priority == Priority.MISS and not fields:
        done = Miss(tuple(instruction_hops(fm.instructions)), _punts(fm.instructions))
        if done != spec.miss:
            violations.append(Violation(ViolationKind.MISS, spec.table, f"does {done}, declared: {spec.miss}"))
    return violations


def _entry_violations(
    spec: TableSpec, fields: Iterable[str], priority: int | None, cookie: int | None, what: str
) -> list[Violation]:
    """An entry's match fields, priority (None: not checked) and cookie kind (None: not checked) against ``spec``."""
    table = int(spec.table)
    violations = [
        Violation(ViolationKind.MATCH_FIELD, table, f"{what}{name}") for name in fields if name not in spec.match_fields
    ]
    if priority is not None and spec.priority_named(priority) is None:
        violations.append(
            Violation(
                ViolationKind.PRIORITY,
                table,
                f"{what}{priority} (declared: " + ", ".join(f"{p.name} {int(p)}" for p in spec.priorities) + ")",
            )
        )
    kind = None if cookie is None else (cookie & KIND_MASK) >> KIND_SHIFT
    if kind is not None and kind not in spec.cookie_kinds:
        name = CookieKind(kind).name if kind in CookieKind._value2member_map_ else "unknown"
        violations.append(Violation(ViolationKind.COOKIE_KIND, table, f"{what}{kind:#04x} ({name})"))
    return violations


def _instruction_violations(spec: TableSpec, instructions: list[Any]) -> list[Violation]:
    """Hops the instructions take that the table does not declare, and what their learn actions would install."""
    violations = [
        Violation(ViolationKind.NEXT_TABLE, int(spec.table), str(hop))
        for hop in instruction_hops(instructions)
        if hop not in spec.hops
    ]
    violations += [
        Violation(ViolationKind.METER, int(spec.table), f"meter {inst.meter_id:#x}")
        for inst in instructions
        if isinstance(inst, parser.OFPInstructionMeter) and meter_kind(inst.meter_id) not in spec.meters
    ]
    for learn in _instruction_actions(instructions, parser.NXActionLearn):
        if learn.table_id not in spec.learns_into:
            violations.append(Violation(ViolationKind.NEXT_TABLE, int(spec.table), f"learn into {learn.table_id}"))
        target = PIPELINE.get(learn.table_id)
        if target is None:
            violations.append(Violation(ViolationKind.UNKNOWN_TABLE, learn.table_id, "a learn action names it"))
            continue
        fields = [_oxm_name(spec_.dst[0]) for spec_ in learn.specs if isinstance(spec_, parser.NXFlowSpecMatch)]
        violations += _entry_violations(
            target, fields, learn.priority, learn.cookie, f"learned by table {int(spec.table)}: "
        )
    return violations


def _oxm_name(nxm_name: str) -> str:
    """The match field a learn spec's Nicira field name stands for (``ipv4_src_nxm`` -> ``ipv4_src``)."""
    return nxm_name.removesuffix("_nxm")


def _instruction_actions(instructions: list[Any], action_type: type) -> Iterator[Any]:
    """The instructions' actions of ``action_type``."""
    for inst in instructions:
        if isinstance(inst, parser.OFPInstructionActions):
            yield from (action for action in inst.actions if isinstance(action, action_type))


def instruction_hops(instructions: list[Any]) -> Iterator[Hop]:
    """Where the instructions send the packet on, in the order the switch does (actions first, goto last)."""
    for inst in sorted(instructions, key=lambda i: isinstance(i, parser.OFPInstructionGotoTable)):
        if isinstance(inst, parser.OFPInstructionGotoTable):
            yield Hop(inst.table_id, Via.GOTO)
        elif isinstance(inst, parser.OFPInstructionActions):
            yield from _action_hops(inst.actions)


def _action_hops(actions: Iterable[Any]) -> Iterator[Hop]:
    """Where actions send the packet on: resubmit, ct with a table, a select group, output to TABLE."""
    for action in actions:
        if isinstance(action, parser.NXActionResubmitTable):
            yield Hop(action.table_id, Via.RESUBMIT)
        elif isinstance(action, parser.NXActionCT) and action.recirc_table != nicira_ext.NX_CT_RECIRC_NONE:
            yield Hop(action.recirc_table, Via.CT)
        elif isinstance(action, parser.OFPActionGroup):
            yield from (Hop(hop.table, Via.GROUP) for hop in GROUP_BUCKET_HOPS)
        elif isinstance(action, parser.OFPActionOutput) and action.port == ofp.OFPP_TABLE:
            yield Hop(Table.CLASSIFY, Via.OUTPUT_TABLE)


def _punts(instructions: list[Any]) -> bool:
    """Whether the instructions send the packet to the controller."""
    return any(
        action.port == ofp.OFPP_CONTROLLER for action in _instruction_actions(instructions, parser.OFPActionOutput)
    )


# -- the document ------------------------------------------------------------------------------------------------------


DOC_BEGIN = "<!-- BEGIN GENERATED by `python -m nlb_sdn.flows.pipeline`: edit its PIPELINE, not this -->"
DOC_END = "<!-- END GENERATED -->"
_OXM_ORDER = {name: index for index, name in enumerate(field.name for field in ofp.oxm_types)}


def render_markdown(pipeline: Mapping[int, TableSpec] = PIPELINE) -> str:
    """The tables section of docs/pipeline.md: one row per declared table, then where packet-outs and groups go."""
    lines = [
        "| table | purpose | match fields | goes on by | miss | priorities | cookie kinds | meters |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for table_id in sorted(pipeline):
        spec = pipeline[table_id]
        fields = ", ".join(f"`{name}`" for name in sorted(spec.match_fields, key=_OXM_ORDER.__getitem__))
        hops = ", ".join([str(hop) for hop in spec.hops] + [f"learn into {int(t)}" for t in sorted(spec.learns_into)])
        priorities = ", ".join(
            f"`{p.name}` {int(p)}" + (f"-{int(p) + p.span}" if p.span else "")
            for p in sorted(spec.priorities, reverse=True)
        )
        kinds = ", ".join(f"{int(kind):#04x} {kind.name.lower()}" for kind in sorted(spec.cookie_kinds))
        meters = ", ".join(f"`{kind.value}`" for kind in MeterKind if kind in spec.meters) or "-"
        lines.append(
            f"| {int(table_id)} `{spec.table.name}` | {spec.purpose} | {fields} | {hops or '-'} | "
            f"{spec.miss} | {priorities} | {kinds} | {meters} |"
        )
    lines += [
        "",
        "A packet-out enters by "
        + ", ".join(str(hop) for hop in PACKET_OUT_HOPS)
        + "; a VIP's select group sends the packet on by "
        + ", ".join(str(h) for h in GROUP_BUCKET_HOPS)
        + ".",
        "",
        f"Meters (per switch, packets per second, burst a 1/{METER_BURST_DIVISOR} second of the rate): "
        f"`miss` is meter {MISS_METER_ID}, `control` meter {CONTROL_METER_ID}, and `vip_syn` of a VIP service "
        f"meter {VIP_METER_BASE:#x} + its VIP id.",
    ]
    return "\n".join(lines) + "\n"


def doc_section(text: str) -> str:
    """The generated section of a document (between ``DOC_BEGIN`` and ``DOC_END``)."""
    start, end = _section_bounds(text)
    return text[start:end].removeprefix("\n")


def with_doc_section(text: str, section: str) -> str:
    """The document with its generated section replaced by ``section``."""
    start, end = _section_bounds(text)
    return text[:start] + "\n" + section + text[end:]


def _section_bounds(text: str) -> tuple[int, int]:
    """Where the generated section of a document starts (after ``DOC_BEGIN``) and ends (at ``DOC_END``)."""
    start = text.find(DOC_BEGIN)
    end = text.find(DOC_END, start + len(DOC_BEGIN)) if start >= 0 else -1
    if end < 0:
        raise ValueError(f"the document has no generated section: a line {DOC_BEGIN!r}, later a line {DOC_END!r}")
    return start + len(DOC_BEGIN), end


def main(argv: list[str] | None = None) -> None:
    """Print the generated section of docs/pipeline.md, or write it into a document (``--write docs/pipeline.md``)."""
    args = argparse.ArgumentParser(description=main.__doc__)
    args.add_argument("--write", type=Path, metavar="DOC", help="replace the generated section of DOC")
    doc = args.parse_args(argv).write
    if doc is None:
        sys.stdout.write(render_markdown())
    else:
        doc.write_text(with_doc_section(doc.read_text(), render_markdown()))


if __name__ == "__main__":
    main()
