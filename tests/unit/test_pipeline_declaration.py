"""The declared forwarder pipeline: the declaration is sound, every flow the builders and the core make keeps to it (and
uses all of it), the checker catches each kind of violation, and docs/pipeline.md shows the declaration as it is."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from nlb_sdn.config import Config, parse_config
from nlb_sdn.core.balancer import LoadBalancer
from nlb_sdn.flows import builders, dispatch, gateway, icmp, templates, tunnel
from nlb_sdn.flows.l4 import L4Protocol
from nlb_sdn.flows.pipeline import (
    DOC_BEGIN,
    DOC_END,
    KIND_MASK,
    LBU_MASK,
    PIPELINE,
    VIP_MASK,
    CookieKind,
    Hop,
    NamedPriority,
    Priority,
    Table,
    TableSpec,
    Via,
    ViolationKind,
    check_message,
    check_messages,
    declaration_errors,
    doc_section,
    instruction_hops,
    main,
    make_cookie,
    render_markdown,
    with_doc_section,
)
from nlb_sdn.framework import ofproto_v1_3 as ofp, ofproto_v1_3_parser as parser
from tests.fakeof.switch import TCP_SYN, FakeDatapath, PipelineViolation, tcp_packet
from tests.frames import syn_frame
from topologies import FabricTopo, lab_config

DOC = Path(__file__).resolve().parents[2] / "docs" / "pipeline.md"
VIP = "10.0.0.100"
CLIENT_EDGE, CLIENT_PORT = 1, 3
DPIDS = (1, 2, 3, 4)
CONFIGS: dict[str, dict[str, Any]] = {
    "nat": {},
    "tunnel": {"mode": "tunnel"},
    "l7": {"mode": "l7", "routers": ["r1", "r2"]},
    "client_ip": {"affinity": "client_ip", "affinity_prefix": 24},
    "session": {"affinity": "client_ip", "affinity_prefix": 24, "granularity": "session"},
    "switch_conntrack": {"dispatch": "switch", "switch_pinning": "conntrack"},
    "switch_learn": {"dispatch": "switch", "switch_pinning": "learn"},
    "switch_learn_client_ip": {
        "dispatch": "switch",
        "switch_pinning": "learn",
        "affinity": "client_ip",
        "affinity_prefix": 24,
    },
}
CONTROLLER_DISPATCHED = ("nat", "tunnel", "l7", "client_ip", "session")


def make_config(**vip_options: Any) -> Config:
    """VIP web (10.0.0.100:80 over h1..h3:80) with ``vip_options``, on FabricTopo with routers r1 and r2."""
    topo = FabricTopo(routers=2)
    vip = {"name": "web", "address": VIP, "port": 80, "members": topo.members(), **vip_options}
    return parse_config(lab_config(topo, [vip], rest={"enabled": False}))


def violations_of(msgs: list[Any]) -> list[str]:
    """The violations of ``msgs``, readable in a failed assertion."""
    return [f"{violation} <- {msg}" for msg in msgs for violation in check_message(msg)]


# -- the declaration ---------------------------------------------------------------------------------------------------


def test_every_table_is_declared_once_and_the_declaration_is_sound() -> None:
    assert sorted(PIPELINE) == list(Table)
    assert all(spec.table == table for table, spec in PIPELINE.items())
    assert declaration_errors(PIPELINE) == []


def declared_with(spec: TableSpec) -> dict[int, TableSpec]:
    """The pipeline with one table's declaration replaced."""
    return {**PIPELINE, spec.table: spec}


@pytest.mark.parametrize(
    "pipeline, error",
    [
        (
            declared_with(
                dataclasses.replace(
                    PIPELINE[Table.FORWARD], priorities=(Priority.FORWARD, Priority.TUNNEL_LABEL, Priority.MISS)
                )
            ),
            "FORWARD and TUNNEL_LABEL are both 10 (aliases)",
        ),
        (
            declared_with(
                dataclasses.replace(
                    PIPELINE[Table.SWITCH_REVERSE], priorities=(NamedPriority(220, "CONNECTION"), Priority.MISS)
                )
            ),
            "CONNECTION is 220 here but 200 in table 1",
        ),
        (
            declared_with(dataclasses.replace(PIPELINE[Table.FORWARD], priorities=(Priority.FORWARD,))),
            "no MISS priority",
        ),
        (
            declared_with(dataclasses.replace(PIPELINE[Table.FORWARD], hops=(Hop(Table.REVERSE, Via.GOTO),))),
            "goto 2 goes backwards",
        ),
        (
            declared_with(dataclasses.replace(PIPELINE[Table.FORWARD], hops=(Hop(Table.TUNNEL, Via.GROUP),))),
            "group 7 is not where the select group's buckets go",
        ),
        (
            declared_with(dataclasses.replace(PIPELINE[Table.REVERSE], hops=(Hop(Table.FORWARD, Via.GOTO),))),
            "miss resubmit 5 is not among the table's hops",
        ),
        (
            declared_with(dataclasses.replace(PIPELINE[Table.FORWARD], match_fields=frozenset({"eth_dest"}))),
            "'eth_dest' is no OpenFlow match field",
        ),
        ({table: spec for table, spec in PIPELINE.items() if table != Table.CT_REVERSE}, "table 9 is not declared"),
    ],
)
def test_a_declaration_that_contradicts_itself_is_refused(pipeline: dict[int, TableSpec], error: str) -> None:
    assert any(error in found for found in declaration_errors(pipeline)), declaration_errors(pipeline)


def test_a_priority_cannot_be_bound_under_a_second_name() -> None:
    with pytest.raises((RuntimeError, TypeError)) as refused:

        class Aliased:
            """Two names for one priority."""

            CONNECTION = NamedPriority(200)
            SERVICE = CONNECTION

    assert "Aliased.SERVICE would alias Aliased.CONNECTION" in str(refused.value) + str(refused.value.__cause__)


def test_priorities_carry_their_names_and_compare_as_ints() -> None:
    assert Priority.CONNECTION.name == "CONNECTION" and Priority.CONNECTION == 200
    assert {200: "found"}[Priority.CONNECTION] == "found" and Priority.VIP_SERVICE == Priority.CONNECTION


# -- every flow of every config and every builder keeps to it ----------------------------------------------------------


@pytest.mark.parametrize("name", CONFIGS)
def test_every_switch_flow_of_every_config_keeps_to_the_pipeline(name: str) -> None:
    lb = LoadBalancer(make_config(**CONFIGS[name]))
    for dpid in DPIDS:
        msgs = lb.switch_flows(dpid)
        assert msgs and violations_of(msgs) == []


@pytest.mark.parametrize("name", CONTROLLER_DISPATCHED)
def test_a_new_connection_of_every_controller_dispatched_config_keeps_to_the_pipeline(name: str) -> None:
    lb = LoadBalancer(make_config(**CONFIGS[name]))
    syn = syn_frame("10.0.0.1", 40000, VIP, 80)
    msgs = lb.handle_packet_in(CLIENT_EDGE, CLIENT_PORT, syn, len(syn), Table.CONNECTIONS, 0.0).to(CLIENT_EDGE)
    assert any(isinstance(msg, parser.OFPFlowMod) for msg in msgs) and violations_of(msgs) == []


def test_config_changes_between_every_mode_keep_to_the_pipeline() -> None:
    lb = LoadBalancer(make_config())
    topo = FabricTopo(routers=2)
    for name in [*CONFIGS, "nat"]:
        changes = lb.apply_config(make_config(**CONFIGS[name]), DPIDS)
        assert violations_of([msg for msgs in changes.messages.values() for msg in msgs]) == [], name
    removed = lb.apply_config(parse_config(lab_config(topo, [], rest={"enabled": False})), DPIDS)
    assert violations_of([msg for msgs in removed.messages.values() for msg in msgs]) == []


LBU = 1
DEFAULT_ROUTE = gateway.PrefixRoute("02:00:00:00:fe:02", "0.0.0.0/0", 0, "02:00:00:00:fe:02", "00:00:00:00:fe:01", 4)
"""A gateway's default route (priority ``PREFIX_ROUTE`` + 0)."""
ROUTE = builders.NatRoute(
    "10.0.0.1",
    40000,
    VIP,
    80,
    "02:4e:0a:00:00:64",
    "10.0.0.11",
    8080,
    "00:00:00:00:00:11",
    make_cookie(CookieKind.NAT, LBU, 3, 7),
    15,
    0,
)
SESSION_ROUTE = dataclasses.replace(ROUTE, cookie=make_cookie(CookieKind.SESSION, LBU, 3, 7))
TUNNEL_ROUTE = tunnel.TunnelRoute(
    **{
        **{f.name: getattr(ROUTE, f.name) for f in dataclasses.fields(ROUTE)},
        "cookie": make_cookie(CookieKind.TUNNEL, LBU, 3, 7),
        "member_port": 80,
        "label": 0x1000B,
    }
)
TARGETS = [
    dispatch.SwitchTarget(7, "10.0.0.11", 8080, "00:00:00:00:00:11"),
    dispatch.SwitchTarget(8, "10.0.0.12", 8080, "00:00:00:00:00:12"),
]


def switch_vip(pinning: str, client_prefix: int | None = None) -> dispatch.SwitchVip:
    """VIP service 3 dispatched by the switch with ``pinning``."""
    return dispatch.SwitchVip(LBU, 3, VIP, 80, ROUTE.vip_mac, 15, 0, client_prefix, 60, pinning)


def built_by_every_builder() -> list[Any]:
    """What every public builder of flows, groups and packet-outs makes, with representative arguments."""
    learn, conntrack = switch_vip("learn", 24), switch_vip("conntrack")
    return [
        *builders.base_flows(LBU, 128),
        *builders.vip_flows(LBU, 3, VIP, 80),
        builders.vip_syn_flow(LBU, 3, VIP, 80),
        builders.vip_syn_flow(LBU, 4, VIP, 53, L4Protocol.UDP),
        builders.vip_syn_delete(VIP, 80),
        *builders.vip_flow_deletes(LBU, 3, VIP, 80, set()),
        *builders.forward_flows(LBU, {"00:00:00:00:00:11": 2}),
        *gateway.route_flows(LBU, [DEFAULT_ROUTE]),
        *gateway.route_changes(LBU, [DEFAULT_ROUTE], []),
        *builders.nat_connection_flows(ROUTE),
        *builders.nat_connection_deletes(ROUTE),
        *builders.nat_connection_deletes(ROUTE, learned=True),
        *builders.session_flows("10.0.0.0/24", SESSION_ROUTE),
        builders.nat_packet_out(ROUTE, 3, b"x"),
        builders.packet_out_table(3, b"x"),
        builders.packet_out_port(3, b"x"),
        builders.flow_stats_request(),
        *templates.nat_connection_flows(ROUTE),
        templates.nat_packet_out(ROUTE, 3, b"x"),
        templates.packet_out_table(3, b"x"),
        *tunnel.tunnel_base_flows(LBU),
        *tunnel.tunnel_base_deletes(),
        *tunnel.label_flows(LBU, [tunnel.LabelHop(0x1000B, 3, "00:00:00:00:00:11"), tunnel.LabelHop(0x1000C, 2)]),
        *tunnel.label_deletes(),
        *tunnel.connection_flows(TUNNEL_ROUTE),
        *tunnel.connection_flows(ROUTE),
        tunnel.tunnel_packet_out(TUNNEL_ROUTE, 3, b"x"),
        *tunnel.tunnel_connection_deletes(TUNNEL_ROUTE),
        *tunnel.tunnel_vip_deletes(LBU, 3),
        *dispatch.dispatch_base_flows(LBU, 128),
        *dispatch.ct_base_flows(LBU),
        *dispatch.ct_shared_flows(LBU, TARGETS),
        *dispatch.switch_vip_flows(learn, TARGETS),
        *dispatch.switch_vip_flows(switch_vip("learn"), TARGETS),
        *dispatch.switch_vip_flows(conntrack, TARGETS),
        dispatch.ct_audit_flow(conntrack, TARGETS[0], "10.0.0.1", 4000),
        *dispatch.group_add(3, [7, 8, 7]),
        dispatch.group_modify(3, [8]),
        *dispatch.select_flow_strict_deletes(learn, TARGETS[:1]),
        *dispatch.learned_flow_deletes(LBU, 3),
        *dispatch.switch_vip_deletes(learn),
        dispatch.switch_flow_stats_request(),
        *(icmp.icmp_flow(LBU, icmp.IcmpEntry(kind, VIP, icmp.IcmpType.ECHO_REQUEST)) for kind in icmp.IcmpPunt),
        icmp.icmp_flow_delete(icmp.IcmpEntry(icmp.IcmpPunt.ERROR_TO_VIP, VIP, icmp.IcmpType.TIME_EXCEEDED)),
        icmp.forward_packet_out(b"x"),
    ]


def test_every_public_builder_keeps_to_the_pipeline() -> None:
    assert violations_of(built_by_every_builder()) == []


def used_by(msgs: list[Any]) -> dict[int, tuple[set[int], set[int], set[Hop]]]:
    """Per table: the priorities, cookie kinds and hops the added flows (and the entries they learn) use."""
    used: dict[int, tuple[set[int], set[int], set[Hop]]] = {table: (set(), set(), set()) for table in Table}
    for msg in msgs:
        if not isinstance(msg, parser.OFPFlowMod) or msg.command != ofp.OFPFC_ADD:
            continue
        priorities, kinds, hops = used[msg.table_id]
        priorities.add(msg.priority)
        kinds.add(msg.cookie >> 56)
        hops.update(instruction_hops(msg.instructions))
        for learn in (
            a for inst in msg.instructions for a in getattr(inst, "actions", []) if isinstance(a, parser.NXActionLearn)
        ):
            used[learn.table_id][0].add(learn.priority)
            used[learn.table_id][1].add(learn.cookie >> 56)
    return used


def test_the_builders_use_every_priority_cookie_kind_and_hop_the_declaration_allows() -> None:
    used = used_by(built_by_every_builder())
    for table, spec in PIPELINE.items():
        priorities, kinds, hops = used[table]
        assert priorities == set(spec.priorities), table
        assert kinds == set(spec.cookie_kinds), table
        assert hops == set(spec.hops), table


# -- the checker catches each kind of violation ------------------------------------------------------------------------


BASE = make_cookie(CookieKind.BASE, LBU)
NAT = ROUTE.cookie
MAC = "00:00:00:00:00:11"


def learn_action(
    table: Table, priority: int = Priority.CONNECTION, cookie: int = NAT, field: str = "tcp_src_nxm"
) -> Any:
    """A learn action installing into ``table`` an entry matching ``field`` (besides IPv4 and TCP)."""
    specs = [
        parser.NXFlowSpecMatch(src=0x0800, dst=("eth_type_nxm", 0), n_bits=16),
        parser.NXFlowSpecMatch(src=6, dst=("ip_proto_nxm", 0), n_bits=8),
        parser.NXFlowSpecMatch(src=(field, 0), dst=(field, 0), n_bits=16),
    ]
    return parser.NXActionLearn(table_id=int(table), specs=specs, priority=int(priority), cookie=cookie)


def select_flow(*actions: Any) -> Any:
    """A table 6 entry with ``actions``."""
    return builders.flow_add(
        Table.SWITCH_SELECT,
        Priority.CONNECTION,
        dispatch.select_match(switch_vip("learn"), TARGETS[0]),
        [builders.apply(*actions)],
        make_cookie(CookieKind.BASE, LBU, 3, 7),
    )


def out(port: int) -> Any:
    """An output action."""
    return parser.OFPActionOutput(port)


BROKEN = {
    "flow in an undeclared table": (
        builders.flow_add(12, Priority.MISS, parser.OFPMatch(), [], BASE),
        ViolationKind.UNKNOWN_TABLE,
    ),
    "match field the table does not match on": (
        builders.flow_add(
            Table.FORWARD, Priority.FORWARD, parser.OFPMatch(in_port=1, eth_dst=MAC), [builders.apply(out(1))], BASE
        ),
        ViolationKind.MATCH_FIELD,
    ),
    "goto a table that is not next": (
        builders.flow_add(
            Table.CLASSIFY, Priority.ETH_TYPE, parser.OFPMatch(eth_type=0x0800), [builders.goto(Table.FORWARD)], BASE
        ),
        ViolationKind.NEXT_TABLE,
    ),
    "resubmit to a table that is not next": (
        builders.flow_add(
            Table.FORWARD,
            Priority.FORWARD,
            parser.OFPMatch(eth_dst=MAC),
            [builders.apply(builders.resubmit(Table.SWITCH_CONNECTIONS))],
            BASE,
        ),
        ViolationKind.NEXT_TABLE,
    ),
    "ct to a table that is not next": (
        builders.flow_add(
            Table.REVERSE,
            Priority.CONNECTION,
            builders.reverse_match(ROUTE),
            [builders.apply(dispatch.ct_lookup(Table.CT_FORWARD)), builders.goto(Table.FORWARD)],
            NAT,
        ),
        ViolationKind.NEXT_TABLE,
    ),
    "group where no group may be used": (
        builders.flow_add(
            Table.CONNECTIONS,
            Priority.SWITCH_DISPATCH,
            builders.vip_match(VIP, 80),
            [builders.apply(parser.OFPActionGroup(3))],
            BASE,
        ),
        ViolationKind.NEXT_TABLE,
    ),
    "output to TABLE in a flow": (
        builders.flow_add(
            Table.FORWARD, Priority.FORWARD, parser.OFPMatch(eth_dst=MAC), [builders.apply(out(ofp.OFPP_TABLE))], BASE
        ),
        ViolationKind.NEXT_TABLE,
    ),
    "learn into a table the table does not learn into": (
        select_flow(learn_action(Table.REVERSE), builders.resubmit(Table.FORWARD)),
        ViolationKind.NEXT_TABLE,
    ),
    "priority the table does not declare": (
        builders.flow_add(
            Table.FORWARD, Priority.CONNECTION, parser.OFPMatch(eth_dst=MAC), [builders.apply(out(1))], BASE
        ),
        ViolationKind.PRIORITY,
    ),
    "strict delete at a priority the table does not declare": (
        builders.flow_delete_strict(Table.CLASSIFY, 5, parser.OFPMatch(eth_type=0x0800)),
        ViolationKind.PRIORITY,
    ),
    "learned entry at a priority its table does not declare": (
        select_flow(learn_action(Table.SWITCH_CONNECTIONS, priority=7), builders.resubmit(Table.FORWARD)),
        ViolationKind.PRIORITY,
    ),
    "cookie kind the table does not allow": (
        builders.flow_add(
            Table.CLASSIFY, Priority.VIP_SERVICE, builders.vip_match(VIP, 80), [builders.goto(Table.CONNECTIONS)], NAT
        ),
        ViolationKind.COOKIE_KIND,
    ),
    "delete of a cookie kind the table does not hold": (
        builders.flow_delete(Table.REVERSE, make_cookie(CookieKind.TUNNEL, LBU, 3), KIND_MASK | VIP_MASK),
        ViolationKind.COOKIE_KIND,
    ),
    "learned entry of a cookie kind its table does not allow": (
        select_flow(
            learn_action(Table.SWITCH_CONNECTIONS, cookie=make_cookie(CookieKind.TUNNEL, LBU, 3, 7)),
            builders.resubmit(Table.FORWARD),
        ),
        ViolationKind.COOKIE_KIND,
    ),
    "learned entry matching a field its table does not": (
        select_flow(learn_action(Table.SWITCH_REVERSE, field="in_port_nxm"), builders.resubmit(Table.FORWARD)),
        ViolationKind.MATCH_FIELD,
    ),
    "miss entry that punts where the table drops": (
        builders.flow_add(
            Table.FORWARD, Priority.MISS, parser.OFPMatch(), [builders.apply(builders.to_controller(64))], BASE
        ),
        ViolationKind.MISS,
    ),
    "miss entry that drops where the table goes on": (
        builders.flow_add(Table.CONNECTIONS, Priority.MISS, parser.OFPMatch(), [], BASE),
        ViolationKind.MISS,
    ),
    "prepared template flow-mod in the wrong table": (
        templates.OFPFlowMod(
            templates.serialised(
                builders.flow_add(
                    Table.FORWARD,
                    Priority.CONNECTION,
                    builders.forward_match(ROUTE),
                    [builders.goto(Table.TUNNEL)],
                    NAT,
                )
            )
        ),
        ViolationKind.MATCH_FIELD,
    ),
    "packet-out resubmitting where packet-outs do not enter": (
        parser.OFPPacketOut(
            None,
            buffer_id=ofp.OFP_NO_BUFFER,
            in_port=3,
            actions=[builders.resubmit(Table.SWITCH_CONNECTIONS)],
            data=b"x",
        ),
        ViolationKind.NEXT_TABLE,
    ),
    "group bucket resubmitting where buckets do not go": (
        parser.OFPGroupMod(
            None,
            ofp.OFPGC_ADD,
            ofp.OFPGT_SELECT,
            3,
            [
                parser.OFPBucket(
                    weight=1,
                    watch_port=ofp.OFPP_ANY,
                    watch_group=ofp.OFPG_ANY,
                    actions=[builders.resubmit(Table.FORWARD)],
                )
            ],
        ),
        ViolationKind.NEXT_TABLE,
    ),
}


@pytest.mark.parametrize("case", BROKEN)
def test_the_checker_catches_each_kind_of_violation(case: str) -> None:
    msg, kind = BROKEN[case]
    assert kind in [violation.kind for violation in check_message(msg)], check_message(msg)
    if case != "prepared template flow-mod in the wrong table":
        assert len(check_message(msg)) == 1, check_message(msg)


def test_a_prepared_template_flow_mod_is_read_back_and_checked_whole() -> None:
    msg, _kind = BROKEN["prepared template flow-mod in the wrong table"]
    kinds = sorted(violation.kind.name for violation in check_message(msg))
    assert kinds == [  # table 3 takes eth_type and ipv4_dst (gateway prefix routes), not the other four
        "COOKIE_KIND",
        "MATCH_FIELD",
        "MATCH_FIELD",
        "MATCH_FIELD",
        "MATCH_FIELD",
        "NEXT_TABLE",
        "PRIORITY",
    ]


def test_deletes_that_do_not_name_a_kind_or_a_table_are_not_held_to_one() -> None:
    msgs = [
        builders.flow_delete(Table.CLASSIFY, make_cookie(CookieKind.NAT, LBU), LBU_MASK),
        builders.flow_delete(ofp.OFPTT_ALL, make_cookie(CookieKind.NAT, LBU), KIND_MASK),
        parser.OFPFlowMod(
            None,
            table_id=Table.REVERSE,
            command=ofp.OFPFC_DELETE,
            priority=1234,
            out_port=ofp.OFPP_ANY,
            out_group=ofp.OFPG_ANY,
            match=parser.OFPMatch(),
        ),
        parser.OFPBarrierRequest(None),
    ]
    assert check_messages(msgs) == []


def test_a_violation_reads_as_one_line() -> None:
    msg, _kind = BROKEN["priority the table does not declare"]
    [violation] = check_message(msg)
    assert str(violation) == "priority not declared in table 3: 200 (declared: PREFIX_ROUTE 20, FORWARD 10, MISS 0)"


# -- the fake switch checks every message it applies -------------------------------------------------------------------


def test_the_fake_switch_refuses_loudly_what_the_pipeline_does_not_allow() -> None:
    msg, _kind = BROKEN["goto a table that is not next"]
    with pytest.raises(PipelineViolation, match="next table not declared in table 0: goto 3"):
        FakeDatapath(1).send_msg(msg)
    FakeDatapath(1, check_pipeline=False).send_msg(msg)


def test_the_fake_switch_checks_the_flow_mods_its_learn_actions_make() -> None:
    dp = FakeDatapath(1)
    dp.send_msg(select_flow(learn_action(Table.SWITCH_CONNECTIONS), builders.resubmit(Table.FORWARD)))
    syn = tcp_packet("00:00:00:00:00:01", ROUTE.vip_mac, "10.0.0.1", VIP, 40000, 80, TCP_SYN)
    dp.switch.trace({**syn, "reg0": TARGETS[0].endpoint_id}, 3, Table.SWITCH_SELECT)
    [learned] = dp.switch.dump_flows(Table.SWITCH_CONNECTIONS)
    assert (learned.priority, learned.cookie) == (Priority.CONNECTION, NAT)
    with pytest.raises(PipelineViolation, match="priority not declared in table 4: 7"):
        dp.switch.flow_mod(builders.flow_add(Table.SWITCH_CONNECTIONS, 7, parser.OFPMatch(), [], NAT))


# -- docs/pipeline.md --------------------------------------------------------------------------------------------------


def test_docs_pipeline_md_shows_the_declaration_as_it_is() -> None:
    assert doc_section(DOC.read_text()) == render_markdown(), (
        "docs/pipeline.md's generated tables section differs from nlb_sdn/flows/pipeline.py's PIPELINE: regenerate it "
        "with `python -m nlb_sdn.flows.pipeline --write docs/pipeline.md`"
    )


def test_the_tables_section_lists_every_table_with_its_miss() -> None:
    rows = [line for line in render_markdown().splitlines() if line.startswith("| ") and "`" in line.split("|")[1]]
    assert [row.split("|")[1].strip() for row in rows] == [f"{int(t)} `{t.name}`" for t in Table]
    assert "| resubmit 4, goto 3 |" in rows[Table.CONNECTIONS] and "| controller |" in rows[Table.SWITCH_CONNECTIONS]


def test_main_prints_the_section_or_writes_it_into_a_document(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main([])
    assert capsys.readouterr().out == render_markdown()
    doc = tmp_path / "doc.md"
    doc.write_text(f"# Title\n\n{DOC_BEGIN}\nstale\n{DOC_END}\n\nprose\n")
    main(["--write", str(doc)])
    assert doc.read_text() == with_doc_section(f"# Title\n\n{DOC_BEGIN}\n{DOC_END}\n\nprose\n", render_markdown())
    assert doc.read_text().startswith(f"# Title\n\n{DOC_BEGIN}\n| table |") and doc.read_text().endswith(
        f"{DOC_END}\n\nprose\n"
    )
