"""Tests of the fake OpenFlow 1.3 switch itself, driven by hand-built os-ken messages."""

from typing import Any

import pytest

from nlb_sdn.framework import ofproto_v1_3 as ofp, ofproto_v1_3_parser as parser, packet, tcp
from tests.fakeof.switch import (
    ACTIONS,
    CT_DNAT,
    CT_EST,
    CT_NEW,
    CT_RPL,
    CT_SNAT,
    CT_TRK,
    ETH_ARP,
    ETH_IPV4,
    ETH_MPLS,
    ETH_VLAN,
    NO_FLOW_COOKIE,
    NX_CT_F_COMMIT,
    NX_CT_RECIRC_NONE,
    NX_NAT_F_DST,
    TCP_ACK,
    TCP_SYN,
    CtTuple,
    FakeDatapath,
    SwitchError,
    TraceResult,
    action_kind,
    arp_packet,
    make_packet,
    packet_from_bytes,
    packet_to_bytes,
    tcp_packet,
)
from tests.frames import arp_request_frame, syn_frame

MAC1, MAC2, MAC3 = "00:00:00:00:00:01", "00:00:00:00:00:02", "00:00:00:00:00:03"
VIP = "10.0.0.100"


def syn(dst: str = VIP, src: str = "10.0.0.1", sport: int = 40000, dport: int = 80) -> dict[str, Any]:
    """A TCP SYN from MAC1 to MAC2."""
    return tcp_packet(MAC1, MAC2, src, dst, sport, dport)


def apply(*actions: Any) -> list[Any]:
    """An apply-actions instruction list."""
    return [parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, list(actions))]


def out(port: int, max_len: int = ofp.OFPCML_MAX) -> Any:
    """An output action."""
    return parser.OFPActionOutput(port, max_len)


def add(
    dp: FakeDatapath,
    table: int = 0,
    priority: int = 100,
    match: Any = None,
    instructions: list[Any] | None = None,
    **kw: Any,
) -> Any:
    """Send an OFPFC_ADD flow-mod and return it."""
    fm = parser.OFPFlowMod(
        dp, table_id=table, priority=priority, match=match or parser.OFPMatch(), instructions=instructions or [], **kw
    )
    dp.send_msg(fm)
    return fm


def delete(dp: FakeDatapath, table: int = ofp.OFPTT_ALL, match: Any = None, strict: bool = False, **kw: Any) -> None:
    """Send a delete flow-mod that does not filter on out_port/out_group unless told to."""
    kw.setdefault("out_port", ofp.OFPP_ANY)
    kw.setdefault("out_group", ofp.OFPG_ANY)
    command = ofp.OFPFC_DELETE_STRICT if strict else ofp.OFPFC_DELETE
    dp.send_msg(parser.OFPFlowMod(dp, table_id=table, command=command, match=match or parser.OFPMatch(), **kw))


def tcp_to_vip(**extra: Any) -> Any:
    """A match on TCP to the VIP, with its prerequisites."""
    return parser.OFPMatch(eth_type=ETH_IPV4, ip_proto=6, ipv4_dst=VIP, **extra)


# -- the datapath ------------------------------------------------------------------------------------------------------


def test_datapath_quacks_like_os_ken_and_records_sent_messages(fake_dp: FakeDatapath) -> None:
    assert (fake_dp.id, fake_dp.ofproto, fake_dp.ofproto_parser) == (1, ofp, parser)
    fm = add(fake_dp, match=parser.OFPMatch(in_port=1), instructions=apply(out(2)))
    barrier = parser.OFPBarrierRequest(fake_dp)
    assert fake_dp.send_msg(barrier) is True
    assert fake_dp.sent == [fm, barrier]
    assert fake_dp.switch.flow_count() == 1
    assert fake_dp.switch.datapath is fake_dp


def test_unsupported_messages_raise_not_implemented(fake_dp: FakeDatapath) -> None:
    with pytest.raises(NotImplementedError, match="select groups"):
        fake_dp.send_msg(parser.OFPGroupMod(fake_dp, type_=ofp.OFPGT_ALL, group_id=1, buckets=[]))
    with pytest.raises(NotImplementedError, match="OFPEchoRequest"):
        fake_dp.send_msg(parser.OFPEchoRequest(fake_dp))


# -- lookup ------------------------------------------------------------------------------------------------------------


def test_highest_priority_wins_and_ties_go_to_the_first_installed(fake_dp: FakeDatapath) -> None:
    add(fake_dp, priority=10, instructions=apply(out(1)))
    add(fake_dp, priority=20, match=parser.OFPMatch(eth_type=ETH_IPV4), instructions=apply(out(2)))
    add(fake_dp, priority=20, match=parser.OFPMatch(eth_dst=MAC2), instructions=apply(out(3)))
    assert fake_dp.switch.trace(syn(), in_port=9).ports == [2]
    assert fake_dp.switch.trace(arp_packet(1, MAC1, "10.0.0.1", VIP, eth_dst=MAC2), in_port=9).ports == [3]
    assert fake_dp.switch.trace(arp_packet(1, MAC1, "10.0.0.1", VIP), in_port=9).ports == [1]


def test_no_matching_entry_drops(fake_dp: FakeDatapath) -> None:
    add(fake_dp, match=parser.OFPMatch(in_port=1), instructions=apply(out(2)))
    result = fake_dp.switch.trace(syn(), in_port=5)
    assert result.dropped and result.hits == [] and result.packet_ins == []
    assert "no match" in result.log[-1]


def test_masked_ipv4_and_eth_matches(fake_dp: FakeDatapath) -> None:
    add(
        fake_dp,
        priority=10,
        match=parser.OFPMatch(eth_type=ETH_IPV4, ipv4_src=("10.1.0.0", "255.255.0.0")),
        instructions=apply(out(1)),
    )
    add(
        fake_dp,
        priority=5,
        match=parser.OFPMatch(eth_src=("00:00:00:00:00:00", "01:00:00:00:00:00")),
        instructions=apply(out(2)),
    )
    assert fake_dp.switch.trace(syn(src="10.1.200.7"), in_port=9).ports == [1]
    assert fake_dp.switch.trace(syn(src="10.2.0.7"), in_port=9).ports == [2]
    multicast_src = dict(syn(src="10.2.0.7"), eth_src="01:00:5e:00:00:01")
    assert fake_dp.switch.trace(multicast_src, in_port=9).dropped


def test_in_port_and_l4_fields_match(fake_dp: FakeDatapath) -> None:
    add(fake_dp, match=tcp_to_vip(in_port=3, tcp_dst=80), instructions=apply(out(1)))
    assert fake_dp.switch.trace(syn(), in_port=3).ports == [1]
    assert fake_dp.switch.trace(syn(), in_port=4).dropped
    assert fake_dp.switch.trace(syn(dport=443), in_port=3).dropped
    # A packet without the field (ARP has no tcp_dst) does not match.
    add(fake_dp, priority=1, match=parser.OFPMatch(eth_type=ETH_ARP, arp_tpa=VIP), instructions=apply(out(7)))
    assert fake_dp.switch.trace(arp_packet(1, MAC1, "10.0.0.1", VIP), in_port=3).ports == [7]


# -- instructions and actions ------------------------------------------------------------------------------------------


def test_goto_table_write_metadata_and_metadata_match(fake_dp: FakeDatapath) -> None:
    add(
        fake_dp,
        table=0,
        match=parser.OFPMatch(in_port=1),
        instructions=[
            parser.OFPInstructionWriteMetadata(0x0A, 0xFF),
            parser.OFPInstructionGotoTable(3),
        ],
    )
    add(fake_dp, table=3, match=parser.OFPMatch(metadata=(0x0A, 0xFF)), instructions=apply(out(4)))
    add(fake_dp, table=3, priority=1, instructions=apply(out(5)))
    result = fake_dp.switch.trace(syn(), in_port=1)
    assert result.ports == [4]
    assert [e.table_id for e in result.hits] == [0, 3]
    assert result.outputs[0][1]["metadata"] == 0x0A


def test_apply_actions_rewrite_in_order_and_outputs_are_snapshots(fake_dp: FakeDatapath) -> None:
    add(
        fake_dp,
        match=tcp_to_vip(),
        instructions=apply(
            out(1),
            parser.OFPActionSetField(ipv4_dst="10.0.0.21"),
            parser.OFPActionSetField(eth_dst=MAC3),
            parser.OFPActionSetField(tcp_dst=8080),
            out(2),
        ),
    )
    result = fake_dp.switch.trace(syn(), in_port=9)
    (p1, before), (p2, after) = result.outputs
    assert (p1, before["ipv4_dst"], before["eth_dst"], before["tcp_dst"]) == (1, VIP, MAC2, 80)
    assert (p2, after["ipv4_dst"], after["eth_dst"], after["tcp_dst"]) == (2, "10.0.0.21", MAC3, 8080)
    assert after["in_port"] == 9


def test_write_actions_run_at_pipeline_end_in_action_set_order(fake_dp: FakeDatapath) -> None:
    add(
        fake_dp,
        table=0,
        match=tcp_to_vip(),
        instructions=[
            parser.OFPInstructionGotoTable(1),
            parser.OFPInstructionActions(
                ofp.OFPIT_WRITE_ACTIONS, [out(1), parser.OFPActionSetField(ipv4_dst="10.0.0.21")]
            ),
        ],
    )
    add(
        fake_dp,
        table=1,
        instructions=[
            parser.OFPInstructionActions(ofp.OFPIT_WRITE_ACTIONS, [out(2)]),
        ],
    )
    result = fake_dp.switch.trace(syn(), in_port=9)
    assert result.ports == [2]
    assert result.outputs[0][1]["ipv4_dst"] == "10.0.0.21"


def test_clear_actions_empties_the_action_set(fake_dp: FakeDatapath) -> None:
    add(
        fake_dp,
        table=0,
        instructions=[
            parser.OFPInstructionActions(ofp.OFPIT_WRITE_ACTIONS, [out(1)]),
            parser.OFPInstructionGotoTable(1),
        ],
    )
    add(fake_dp, table=1, instructions=[parser.OFPInstructionActions(ofp.OFPIT_CLEAR_ACTIONS, [])])
    assert fake_dp.switch.trace(syn(), in_port=9).dropped


def test_output_to_in_port_is_skipped_unless_ofpp_in_port(fake_dp: FakeDatapath) -> None:
    add(fake_dp, instructions=apply(out(3), out(4)))
    result = fake_dp.switch.trace(syn(), in_port=3)
    assert result.ports == [4]
    assert any("skipped" in line for line in result.log)
    add(fake_dp, priority=200, instructions=apply(out(ofp.OFPP_IN_PORT)))
    assert fake_dp.switch.trace(syn(), in_port=3).ports == [3]


def test_push_and_pop_vlan_and_vlan_vid_matching(fake_dp: FakeDatapath) -> None:
    add(
        fake_dp,
        table=0,
        match=parser.OFPMatch(in_port=1),
        instructions=apply(
            parser.OFPActionPushVlan(ETH_VLAN),
            parser.OFPActionSetField(vlan_vid=ofp.OFPVID_PRESENT | 42),
            out(2),
        ),
    )
    tagged = fake_dp.switch.trace(syn(), in_port=1).outputs[0][1]
    assert tagged["vlan"] == [{"tpid": ETH_VLAN, "vid": 42, "pcp": 0}]
    assert tagged["eth_type"] == ETH_IPV4
    add(
        fake_dp,
        table=0,
        match=parser.OFPMatch(in_port=2, vlan_vid=ofp.OFPVID_PRESENT | 42),
        instructions=apply(parser.OFPActionPopVlan(), out(3)),
    )
    add(
        fake_dp,
        table=0,
        priority=50,
        match=parser.OFPMatch(vlan_vid=(ofp.OFPVID_PRESENT, ofp.OFPVID_PRESENT)),
        instructions=apply(out(4)),
    )
    add(fake_dp, table=0, priority=40, match=parser.OFPMatch(vlan_vid=ofp.OFPVID_NONE), instructions=apply(out(5)))
    assert fake_dp.switch.trace(tagged, in_port=2).outputs[0] == (3, dict(tagged, vlan=[], in_port=2))
    assert fake_dp.switch.trace(dict(tagged, vlan=[{"tpid": ETH_VLAN, "vid": 7, "pcp": 0}]), in_port=2).ports == [4]
    assert fake_dp.switch.trace(syn(), in_port=2).ports == [5]


def test_push_and_pop_mpls(fake_dp: FakeDatapath) -> None:
    add(
        fake_dp,
        table=0,
        match=parser.OFPMatch(in_port=1, eth_type=ETH_IPV4),
        instructions=apply(
            parser.OFPActionPushMpls(ETH_MPLS),
            parser.OFPActionSetField(mpls_label=1001),
            out(2),
        ),
    )
    labelled = fake_dp.switch.trace(syn(), in_port=1).outputs[0][1]
    assert labelled["eth_type"] == ETH_MPLS
    assert labelled["mpls"] == [{"label": 1001, "tc": 0, "ttl": 64}]
    assert labelled["mpls_payload_type"] == ETH_IPV4
    add(
        fake_dp,
        table=0,
        match=parser.OFPMatch(in_port=2, eth_type=ETH_MPLS, mpls_label=1001, mpls_bos=1),
        instructions=apply(parser.OFPActionPopMpls(ETH_IPV4), out(3)),
    )
    port, popped = fake_dp.switch.trace(labelled, in_port=2).outputs[0]
    assert port == 3
    assert popped == dict(syn(), in_port=2)


def test_dec_nw_ttl_decrements_then_drops_at_one(fake_dp: FakeDatapath) -> None:
    add(fake_dp, match=parser.OFPMatch(eth_type=ETH_IPV4), instructions=apply(parser.OFPActionDecNwTtl(), out(2)))
    assert fake_dp.switch.trace(dict(syn(), nw_ttl=5), in_port=1).outputs[0][1]["nw_ttl"] == 4
    result = fake_dp.switch.trace(dict(syn(), nw_ttl=1), in_port=1)
    assert result.dropped and "invalid ttl" in result.log[-1]


def test_new_action_classes_plug_into_the_registry(fake_dp: FakeDatapath) -> None:
    class Mark(parser.OFPActionSetQueue):
        """A stand-in for an encapsulation action a later issue will add."""

    def check(action: Any, view: Any) -> None:
        """Accept anywhere."""

    @action_kind(Mark, order=8, check=check)
    def mark(action: Any, run: Any) -> None:
        """Tag the packet with the queue id."""
        run.packet["queue"] = action.queue_id

    try:
        add(fake_dp, instructions=apply(Mark(7), out(2)))
        assert fake_dp.switch.trace(syn(), in_port=1).outputs[0][1]["queue"] == 7
    finally:
        del ACTIONS[Mark]


# -- packet-in and packet-out ------------------------------------------------------------------------------------------


def test_table_miss_entry_sends_truncated_packet_in(fake_dp: FakeDatapath) -> None:
    add(fake_dp, table=0, match=parser.OFPMatch(in_port=7), instructions=[parser.OFPInstructionGotoTable(2)])
    add(fake_dp, table=2, priority=0, cookie=0xAB, instructions=apply(out(ofp.OFPP_CONTROLLER, 32)))
    frame = syn(dst="10.0.0.9") | {"payload": b"x" * 100}
    result = fake_dp.switch.trace(frame, in_port=7)
    (pin,) = result.packet_ins
    full = packet_to_bytes(dict(frame, in_port=7))
    assert (pin.table_id, pin.cookie, pin.reason, pin.max_len) == (2, 0xAB, ofp.OFPR_NO_MATCH, 32)
    assert (pin.data, pin.total_len, pin.in_port) == (full[:32], len(full), 7)
    assert not result.dropped and result.outputs == []
    msg = pin.to_msg(fake_dp)
    assert isinstance(msg, parser.OFPPacketIn)
    assert (msg.datapath, msg.buffer_id, msg.match["in_port"], msg.table_id) == (fake_dp, ofp.OFP_NO_BUFFER, 7, 2)
    assert msg.data == full[:32] and msg.total_len == len(full) and msg.cookie == 0xAB


def test_controller_output_from_a_rule_is_reason_action_with_full_frame(fake_dp: FakeDatapath) -> None:
    add(
        fake_dp,
        priority=5,
        match=parser.OFPMatch(in_port=7),
        cookie=0x5,
        instructions=apply(parser.OFPActionSetField(eth_dst=MAC3), out(ofp.OFPP_CONTROLLER, ofp.OFPCML_NO_BUFFER)),
    )
    (pin,) = fake_dp.switch.trace(syn(), in_port=7).packet_ins
    assert pin.reason == ofp.OFPR_ACTION and pin.cookie == 0x5
    assert packet_from_bytes(pin.data) == dict(syn(), eth_dst=MAC3)
    assert pin.packet["eth_dst"] == MAC3


def test_packet_in_match_carries_pipeline_fields(fake_dp: FakeDatapath) -> None:
    add(fake_dp, instructions=[parser.OFPInstructionWriteMetadata(9, 0xFF), parser.OFPInstructionGotoTable(1)])
    add(fake_dp, table=1, priority=0, instructions=apply(out(ofp.OFPP_CONTROLLER)))
    msg = fake_dp.switch.trace(syn(), in_port=2).packet_ins[0].to_msg(fake_dp)
    assert dict(msg.match.items()) == {"in_port": 2, "metadata": 9}


def test_packet_out_to_table_runs_the_pipeline_from_table_zero(fake_dp: FakeDatapath) -> None:
    add(fake_dp, table=0, match=parser.OFPMatch(in_port=ofp.OFPP_CONTROLLER), instructions=apply(out(4)))
    add(fake_dp, table=0, match=parser.OFPMatch(in_port=1), instructions=apply(out(5)))
    data = packet_to_bytes(syn())
    for in_port, expected in ((ofp.OFPP_CONTROLLER, [4]), (1, [5])):
        fake_dp.send_msg(
            parser.OFPPacketOut(
                fake_dp,
                buffer_id=ofp.OFP_NO_BUFFER,
                in_port=in_port,
                actions=[parser.OFPActionSetField(eth_src=MAC3), out(ofp.OFPP_TABLE)],
                data=data,
            )
        )
        result = fake_dp.switch.packet_outs[-1]
        assert result.ports == expected
        assert result.outputs[0][1]["eth_src"] == MAC3
        assert [e.n_packets for e in result.hits] == [1]


def test_packet_out_direct_output_and_controller(fake_dp: FakeDatapath) -> None:
    pkt = packet.Packet(packet_to_bytes(arp_packet(2, MAC2, VIP, "10.0.0.1", eth_dst=MAC1)))
    msg = parser.OFPPacketOut(
        fake_dp,
        buffer_id=ofp.OFP_NO_BUFFER,
        in_port=ofp.OFPP_CONTROLLER,
        actions=[out(3), out(ofp.OFPP_CONTROLLER)],
        data=pkt,
    )
    result = fake_dp.switch.packet_out(msg)
    assert result.ports == [3]
    assert result.outputs[0][1]["arp_spa"] == VIP and result.outputs[0][1]["arp_op"] == 2
    (pin,) = result.packet_ins
    assert (pin.table_id, pin.cookie, pin.reason) == (ofp.OFPTT_ALL, NO_FLOW_COOKIE, ofp.OFPR_ACTION)
    assert fake_dp.switch.flow_count() == 0


def test_packet_out_with_a_buffer_id_or_flood_is_refused(fake_dp: FakeDatapath) -> None:
    data = packet_to_bytes(syn())
    with pytest.raises(SwitchError, match="OFPBRC_BUFFER_UNKNOWN"):
        fake_dp.send_msg(parser.OFPPacketOut(fake_dp, buffer_id=5, in_port=1, actions=[out(2)]))
    with pytest.raises(NotImplementedError, match="reserved port"):
        fake_dp.send_msg(
            parser.OFPPacketOut(
                fake_dp, buffer_id=ofp.OFP_NO_BUFFER, in_port=1, actions=[out(ofp.OFPP_FLOOD)], data=data
            )
        )


# -- flow-mod semantics ------------------------------------------------------------------------------------------------


def test_add_identical_match_and_priority_replaces_keeping_counters(fake_dp: FakeDatapath) -> None:
    add(fake_dp, match=tcp_to_vip(), instructions=apply(out(1)), cookie=1)
    fake_dp.switch.trace(syn(), in_port=9)
    add(fake_dp, match=tcp_to_vip(), instructions=apply(out(2)), cookie=2)
    (entry,) = fake_dp.switch.dump_flows(0)
    assert (entry.cookie, entry.n_packets) == (2, 1)
    assert fake_dp.switch.trace(syn(), in_port=9).ports == [2]
    add(fake_dp, match=tcp_to_vip(), instructions=apply(out(3)), flags=ofp.OFPFF_RESET_COUNTS)
    assert fake_dp.switch.dump_flows(0)[0].n_packets == 0
    add(fake_dp, priority=101, match=tcp_to_vip(), instructions=apply(out(3)))
    assert fake_dp.switch.flow_count(0) == 2


def test_counters_and_dump_order(fake_dp: FakeDatapath) -> None:
    add(fake_dp, priority=1, instructions=apply(out(1)))
    add(fake_dp, priority=9, match=parser.OFPMatch(in_port=5), instructions=apply(out(2)))
    add(fake_dp, table=1, priority=3, instructions=apply(out(2)))
    for _ in range(3):
        fake_dp.switch.trace(syn(), in_port=5)
    fake_dp.switch.trace(syn(), in_port=6)
    assert [(e.table_id, e.priority) for e in fake_dp.switch.dump_flows()] == [(0, 9), (0, 1), (1, 3)]
    high, low, _ = fake_dp.switch.dump_flows()
    frame_len = len(packet_to_bytes(syn()))
    assert (high.n_packets, high.n_bytes, low.n_packets, low.n_bytes) == (3, 3 * frame_len, 1, frame_len)


def test_modify_changes_instructions_only_of_selected_entries(fake_dp: FakeDatapath) -> None:
    add(fake_dp, priority=10, match=tcp_to_vip(tcp_dst=80), instructions=apply(out(1)), cookie=0x11, idle_timeout=30)
    add(fake_dp, priority=20, match=tcp_to_vip(tcp_dst=443), instructions=apply(out(1)), cookie=0x12)
    fake_dp.switch.trace(syn(), in_port=9)
    modify = parser.OFPFlowMod(
        fake_dp, command=ofp.OFPFC_MODIFY, match=tcp_to_vip(), cookie=0x11, cookie_mask=0xFF, instructions=apply(out(2))
    )
    fake_dp.send_msg(modify)
    assert fake_dp.switch.trace(syn(), in_port=9).ports == [2]
    assert fake_dp.switch.trace(syn(dport=443), in_port=9).ports == [1]
    entry = fake_dp.switch.dump_flows(0)[1]
    assert (entry.cookie, entry.idle_timeout, entry.n_packets) == (0x11, 30, 2)
    strict = parser.OFPFlowMod(
        fake_dp,
        command=ofp.OFPFC_MODIFY_STRICT,
        priority=20,
        match=tcp_to_vip(tcp_dst=443),
        flags=ofp.OFPFF_RESET_COUNTS,
        instructions=apply(out(3)),
    )
    fake_dp.send_msg(strict)
    assert fake_dp.switch.trace(syn(dport=443), in_port=9).ports == [3]
    assert fake_dp.switch.dump_flows(0)[0].n_packets == 1
    nothing = parser.OFPFlowMod(
        fake_dp, command=ofp.OFPFC_MODIFY, match=parser.OFPMatch(in_port=77), instructions=apply(out(4))
    )
    fake_dp.send_msg(nothing)
    assert fake_dp.switch.flow_count() == 2


def test_delete_by_cookie_mask_across_all_tables(fake_dp: FakeDatapath) -> None:
    for table, cookie in ((0, 0x1_0001), (0, 0x1_0002), (1, 0x1_0003), (2, 0x2_0001)):
        add(fake_dp, table=table, priority=cookie & 0xFF, cookie=cookie, instructions=apply(out(1)))
    assert fake_dp.switch.flow_count(cookie=0x1_0000, cookie_mask=0xF_0000) == 3
    assert fake_dp.switch.flow_count(0, cookie=0x1_0002) == 1
    delete(fake_dp, cookie=0x1_0000, cookie_mask=0xF_0000)
    assert [e.cookie for e in fake_dp.switch.dump_flows()] == [0x2_0001]


def test_delete_filters_on_out_port_and_os_ken_defaults_delete_nothing(fake_dp: FakeDatapath) -> None:
    add(fake_dp, priority=1, instructions=apply(out(1)))
    add(fake_dp, priority=2, instructions=[parser.OFPInstructionActions(ofp.OFPIT_WRITE_ACTIONS, [out(2)])])
    fake_dp.send_msg(parser.OFPFlowMod(fake_dp, table_id=ofp.OFPTT_ALL, command=ofp.OFPFC_DELETE))
    assert fake_dp.switch.flow_count() == 2  # out_port=0/out_group=0 select nothing, as on Open vSwitch
    delete(fake_dp, out_port=2)
    assert [e.priority for e in fake_dp.switch.dump_flows()] == [1]
    delete(fake_dp, out_group=5)
    assert fake_dp.switch.flow_count() == 1


def test_strict_and_non_strict_delete(fake_dp: FakeDatapath) -> None:
    add(fake_dp, priority=10, match=tcp_to_vip())
    add(fake_dp, priority=20, match=tcp_to_vip())
    add(fake_dp, priority=10, match=tcp_to_vip(tcp_dst=80))
    add(fake_dp, priority=10, match=parser.OFPMatch(eth_type=ETH_IPV4, ipv4_dst=("10.0.0.0", "255.255.255.0")))
    delete(fake_dp, table=0, match=tcp_to_vip(), priority=10, strict=True)
    assert fake_dp.switch.flow_count() == 3
    delete(fake_dp, table=0, match=parser.OFPMatch(eth_type=ETH_IPV4, ipv4_dst=("10.0.0.0", "255.255.255.0")))
    # Every remaining entry pins ipv4_dst to an address inside 10.0.0.0/24, so all are at least as specific.
    assert fake_dp.switch.flow_count() == 0


def test_non_strict_delete_keeps_less_specific_entries(fake_dp: FakeDatapath) -> None:
    add(fake_dp, priority=10, match=parser.OFPMatch(eth_type=ETH_IPV4))
    add(fake_dp, priority=10, match=parser.OFPMatch(eth_type=ETH_IPV4, ipv4_dst=("10.0.0.0", "255.0.0.0")))
    add(fake_dp, priority=10, match=tcp_to_vip())
    delete(fake_dp, match=parser.OFPMatch(eth_type=ETH_IPV4, ipv4_dst=("10.0.0.0", "255.255.0.0")))
    assert [e.match for e in fake_dp.switch.dump_flows()] == [
        {"eth_type": ETH_IPV4},
        {"eth_type": ETH_IPV4, "ipv4_dst": ("10.0.0.0", "255.0.0.0")},
    ]


# -- timeouts and flow-removed -----------------------------------------------------------------------------------------


def test_idle_timeout_expiry_produces_flow_removed(fake_dp: FakeDatapath) -> None:
    sw = fake_dp.switch
    sw.now = 100.0
    add(
        fake_dp,
        priority=7,
        match=tcp_to_vip(),
        cookie=0x77,
        idle_timeout=10,
        flags=ofp.OFPFF_SEND_FLOW_REM,
        instructions=apply(out(1)),
    )
    add(fake_dp, priority=6, idle_timeout=10, instructions=apply(out(2)))
    sw.now = 105.0
    sw.trace(syn(), in_port=1)
    assert sw.expire(112.0) == []
    assert sw.flow_count() == 1
    (removed,) = sw.expire(115.5)
    assert isinstance(removed, parser.OFPFlowRemoved)
    assert (removed.datapath, removed.cookie, removed.priority, removed.reason, removed.table_id) == (
        fake_dp,
        0x77,
        7,
        ofp.OFPRR_IDLE_TIMEOUT,
        0,
    )
    assert (removed.idle_timeout, removed.hard_timeout, removed.packet_count) == (10, 0, 1)
    assert removed.byte_count == len(packet_to_bytes(syn()))
    assert (removed.duration_sec, removed.duration_nsec) == (15, 500_000_000)
    assert dict(removed.match.items()) == dict(tcp_to_vip().items())
    assert sw.flow_count() == 0 and sw.flow_removed == [removed]


def test_hard_timeout_wins_over_activity(fake_dp: FakeDatapath) -> None:
    add(fake_dp, hard_timeout=5, idle_timeout=3, flags=ofp.OFPFF_SEND_FLOW_REM, instructions=apply(out(1)))
    for now in (2.0, 4.0):
        fake_dp.switch.now = now
        fake_dp.switch.trace(syn(), in_port=9)
    (removed,) = fake_dp.switch.expire(5.0)
    assert removed.reason == ofp.OFPRR_HARD_TIMEOUT and removed.packet_count == 2


def test_delete_reports_flow_removed_for_send_flow_rem_entries(fake_dp: FakeDatapath) -> None:
    add(fake_dp, priority=1, cookie=1, flags=ofp.OFPFF_SEND_FLOW_REM)
    add(fake_dp, priority=2, cookie=2)
    delete(fake_dp)
    assert [(m.cookie, m.reason) for m in fake_dp.switch.flow_removed] == [(1, ofp.OFPRR_DELETE)]


# -- what a real switch refuses ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"match": parser.OFPMatch(ipv4_dst=VIP)}, "OFPBMC_BAD_PREREQ"),
        ({"match": parser.OFPMatch(eth_type=ETH_IPV4, tcp_dst=80)}, "OFPBMC_BAD_PREREQ"),
        ({"match": parser.OFPMatch(vlan_pcp=3)}, "OFPBMC_BAD_PREREQ"),
        ({"table": 3, "instructions": [parser.OFPInstructionGotoTable(2)]}, "OFPBIC_BAD_TABLE_ID"),
        ({"instructions": [parser.OFPInstructionGotoTable(255)]}, "OFPBIC_BAD_TABLE_ID"),
        ({"instructions": apply(out(ofp.OFPP_TABLE))}, "OFPBAC_BAD_OUT_PORT"),
        ({"instructions": apply(out(0))}, "OFPBAC_BAD_OUT_PORT"),
        (
            {"match": parser.OFPMatch(eth_type=ETH_IPV4), "instructions": apply(parser.OFPActionSetField(tcp_dst=1))},
            "OFPBAC_MATCH_INCONSISTENT",
        ),
        (
            {
                "instructions": [
                    parser.OFPInstructionActions(ofp.OFPIT_WRITE_ACTIONS, [parser.OFPActionSetField(ipv4_dst=VIP)])
                ]
            },
            "OFPBAC_MATCH_INCONSISTENT",
        ),
        ({"instructions": apply(parser.OFPActionPopVlan())}, "OFPBAC_MATCH_INCONSISTENT"),
        (
            {"instructions": apply(parser.OFPActionSetField(vlan_vid=ofp.OFPVID_PRESENT | 3))},
            "OFPBAC_MATCH_INCONSISTENT",
        ),
        ({"instructions": apply(parser.OFPActionPopMpls(ETH_IPV4))}, "OFPBAC_MATCH_INCONSISTENT"),
        ({"instructions": apply(parser.OFPActionDecNwTtl())}, "OFPBAC_MATCH_INCONSISTENT"),
        ({"table": 255}, "OFPFMFC_BAD_TABLE_ID"),
        ({"buffer_id": 1}, "OFPBRC_BUFFER_UNKNOWN"),
        ({"command": 9}, "OFPFMFC_BAD_COMMAND"),
    ],
)
def test_flow_mods_a_switch_would_reject_raise(fake_dp: FakeDatapath, kwargs: dict[str, Any], code: str) -> None:
    with pytest.raises(SwitchError, match=code) as caught:
        add(fake_dp, **kwargs)
    assert caught.value.code == getattr(ofp, code)
    assert fake_dp.switch.flow_count() == 0


def test_actions_after_push_satisfy_prerequisites(fake_dp: FakeDatapath) -> None:
    add(
        fake_dp,
        instructions=apply(
            parser.OFPActionPushVlan(ETH_VLAN), parser.OFPActionSetField(vlan_pcp=5), parser.OFPActionPopVlan()
        ),
    )
    add(
        fake_dp,
        match=parser.OFPMatch(eth_type=ETH_IPV4),
        instructions=apply(
            parser.OFPActionPushMpls(ETH_MPLS),
            parser.OFPActionSetField(mpls_tc=3),
            parser.OFPActionPopMpls(ETH_ARP),
            parser.OFPActionSetField(arp_op=2),
        ),
    )
    with pytest.raises(SwitchError, match="ipv4_dst"):
        add(
            fake_dp,
            priority=3,
            match=parser.OFPMatch(eth_type=ETH_IPV4),
            instructions=apply(parser.OFPActionPushMpls(ETH_MPLS), parser.OFPActionSetField(ipv4_dst=VIP)),
        )
    assert fake_dp.switch.flow_count() == 2


def test_check_overlap(fake_dp: FakeDatapath) -> None:
    add(fake_dp, match=parser.OFPMatch(eth_type=ETH_IPV4, ipv4_dst=("10.0.0.0", "255.255.255.0")))
    add(fake_dp, match=parser.OFPMatch(eth_type=ETH_IPV4, ipv4_dst="10.0.1.1"), flags=ofp.OFPFF_CHECK_OVERLAP)
    with pytest.raises(SwitchError, match="OFPFMFC_OVERLAP"):
        add(fake_dp, match=tcp_to_vip(), flags=ofp.OFPFF_CHECK_OVERLAP)
    add(fake_dp, priority=1, match=tcp_to_vip(), flags=ofp.OFPFF_CHECK_OVERLAP)
    assert fake_dp.switch.flow_count() == 3


def test_delete_of_a_missing_table_and_modify_of_all_tables_raise(fake_dp: FakeDatapath) -> None:
    small = FakeDatapath(2, n_tables=4, check_pipeline=False)
    with pytest.raises(SwitchError, match="OFPFMFC_BAD_TABLE_ID"):
        delete(small, table=4)
    with pytest.raises(SwitchError, match="OFPFMFC_BAD_TABLE_ID"):
        fake_dp.send_msg(parser.OFPFlowMod(fake_dp, table_id=ofp.OFPTT_ALL, command=ofp.OFPFC_MODIFY))


@pytest.mark.parametrize(
    "instructions",
    [
        apply(out(ofp.OFPP_FLOOD)),
        apply(out(ofp.OFPP_NORMAL)),
    ],
)
def test_unsupported_features_raise_not_implemented(fake_dp: FakeDatapath, instructions: list[Any]) -> None:
    with pytest.raises(NotImplementedError, match="fake switch"):
        add(fake_dp, instructions=instructions)


def test_a_kbps_meter_is_not_supported(fake_dp: FakeDatapath) -> None:
    band = parser.OFPMeterBandDrop(rate=1000, burst_size=10)
    with pytest.raises(NotImplementedError, match="fake switch"):
        fake_dp.send_msg(
            parser.OFPMeterMod(fake_dp, command=ofp.OFPMC_ADD, flags=ofp.OFPMF_KBPS, meter_id=1, bands=[band])
        )


def test_a_flow_through_an_unknown_meter_is_refused(fake_dp: FakeDatapath) -> None:
    with pytest.raises(SwitchError, match="OFPMMFC_UNKNOWN_METER"):
        add(fake_dp, instructions=[parser.OFPInstructionMeter(1)])


def test_a_meter_drops_what_exceeds_its_burst_until_it_refills(fake_dp: FakeDatapath) -> None:
    band = parser.OFPMeterBandDrop(rate=10, burst_size=2)
    flags = ofp.OFPMF_PKTPS | ofp.OFPMF_BURST
    fake_dp.send_msg(parser.OFPMeterMod(fake_dp, command=ofp.OFPMC_ADD, flags=flags, meter_id=1, bands=[band]))
    add(fake_dp, instructions=[parser.OFPInstructionMeter(1), *apply(out(2))])
    pkt = make_packet(ipv4_src="10.0.0.1", ipv4_dst="10.0.0.2")
    assert [fake_dp.switch.trace(pkt, in_port=1).dropped for _ in range(3)] == [False, False, True]
    fake_dp.switch.now += 0.1  # one token back
    assert [fake_dp.switch.trace(pkt, in_port=1).dropped for _ in range(2)] == [False, True]
    fake_dp.send_msg(parser.OFPMeterMod(fake_dp, command=ofp.OFPMC_DELETE, meter_id=ofp.OFPM_ALL))
    assert fake_dp.switch.tables[0] == [] and fake_dp.switch.meters == {}


# -- packets and frames ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pkt",
    [
        syn() | {"payload": b"GET / HTTP/1.0\r\n\r\n"},
        tcp_packet(MAC2, MAC1, VIP, "10.0.0.1", 80, 40000, tcp_flags=TCP_SYN | TCP_ACK, ip_dscp=10, nw_ttl=3),
        arp_packet(1, MAC1, "10.0.0.1", VIP),
        make_packet(eth_src=MAC1, eth_dst=MAC2, udp_src=53, udp_dst=5353, ipv4_dst="10.0.0.53", payload=b"q"),
        make_packet(eth_src=MAC1, ipv4_src="10.0.0.1", ip_proto=1, payload=b"\x08\x00icmp"),
        make_packet(
            vlan=[{"tpid": 0x88A8, "vid": 5, "pcp": 1}, {"tpid": ETH_VLAN, "vid": 7, "pcp": 0}],
            mpls=[{"label": 16, "tc": 1, "ttl": 9}, {"label": 17, "tc": 0, "ttl": 8}],
            eth_type=ETH_MPLS,
            tcp_src=1,
            tcp_dst=2,
        ),
    ],
)
def test_packet_dict_bytes_round_trip(pkt: dict[str, Any]) -> None:
    data = packet_to_bytes(pkt)
    assert packet_from_bytes(data) == pkt
    assert packet_to_bytes(packet_from_bytes(data)) == data
    assert packet_from_bytes(data, in_port=4) == dict(pkt, in_port=4)


def test_frames_parse_with_the_os_ken_packet_library() -> None:
    frame = packet.Packet(packet_to_bytes(syn() | {"payload": b"hi"}))
    segment = frame.get_protocol(tcp.tcp)
    assert segment.has_flags(tcp.TCP_SYN) and (segment.src_port, segment.dst_port) == (40000, 80)
    assert frame.protocols[-1] == b"hi"


def test_frames_from_the_shared_builders_parse_and_trace(fake_dp: FakeDatapath) -> None:
    frame = syn_frame("10.0.0.1", 40000, VIP, 80, payload=b"hi")
    pkt = packet_from_bytes(frame, in_port=2)
    assert (pkt["ipv4_dst"], pkt["tcp_dst"], pkt["tcp_flags"], pkt["payload"]) == (VIP, 80, TCP_SYN, b"hi")
    assert packet_from_bytes(arp_request_frame(MAC1, "10.0.0.1", VIP))["arp_tpa"] == VIP
    add(fake_dp, match=tcp_to_vip(tcp_dst=80), instructions=apply(out(1)))
    assert fake_dp.switch.trace(pkt, in_port=2).ports == [1]


def test_make_packet_infers_types() -> None:
    assert make_packet(arp_tpa=VIP)["eth_type"] == ETH_ARP
    assert make_packet(tcp_dst=80)["ip_proto"] == 6
    assert make_packet(udp_dst=53)["ip_proto"] == 17
    assert make_packet(ipv4_dst=VIP)["ip_proto"] == 0
    assert make_packet(payload=b"raw")["eth_type"] == 0


def test_trace_result_dropped_and_ports() -> None:
    assert TraceResult().dropped
    assert TraceResult(outputs=[(1, {}), (3, {})]).ports == [1, 3]


# -- groups, resubmit and learn (switch-resident dispatch) ------------------------------------------------------------


def select_group(fake_dp: FakeDatapath, group_id: int, bucket_ports: list[int], command: int = ofp.OFPGC_ADD) -> None:
    """A select group whose equal buckets output to the given ports."""
    buckets = [parser.OFPBucket(weight=1, actions=[out(port)]) for port in bucket_ports]
    fake_dp.send_msg(parser.OFPGroupMod(fake_dp, command, ofp.OFPGT_SELECT, group_id, buckets))


def test_a_flow_may_only_use_an_existing_group_and_loses_it_with_the_group(fake_dp: FakeDatapath) -> None:
    with pytest.raises(SwitchError, match="OFPBAC_BAD_OUT_GROUP"):
        add(fake_dp, instructions=apply(parser.OFPActionGroup(7)))
    select_group(fake_dp, 7, [1, 2])
    add(fake_dp, instructions=apply(parser.OFPActionGroup(7)))
    with pytest.raises(SwitchError, match="GROUP_EXISTS"):
        select_group(fake_dp, 7, [1])
    fake_dp.send_msg(parser.OFPGroupMod(fake_dp, ofp.OFPGC_DELETE, ofp.OFPGT_SELECT, 7, []))
    assert fake_dp.switch.flow_count() == 0
    with pytest.raises(SwitchError, match="UNKNOWN_GROUP"):
        select_group(fake_dp, 7, [1], ofp.OFPGC_MODIFY)


def test_a_select_group_spreads_connections_by_5_tuple_and_keeps_each_on_one_bucket(fake_dp: FakeDatapath) -> None:
    select_group(fake_dp, 1, [1, 2, 2, 2])
    add(fake_dp, instructions=apply(parser.OFPActionGroup(1)))
    ports = [fake_dp.switch.trace(syn(sport=40000 + n), in_port=9).ports for n in range(400)]
    assert all(len(p) == 1 for p in ports)
    share = sum(p == [2] for p in ports) / len(ports)
    assert 0.65 < share < 0.85
    again = [fake_dp.switch.trace(syn(sport=40000 + n), in_port=9).ports for n in range(400)]
    assert again == ports


def test_a_bucket_acts_on_a_copy_and_resubmit_comes_back(fake_dp: FakeDatapath) -> None:
    fake_dp.send_msg(
        parser.OFPGroupMod(
            fake_dp,
            ofp.OFPGC_ADD,
            ofp.OFPGT_SELECT,
            1,
            [parser.OFPBucket(weight=1, actions=[parser.OFPActionSetField(eth_dst=MAC2), out(1)])],
        )
    )
    add(fake_dp, table=1, match=parser.OFPMatch(eth_dst=MAC2), instructions=apply(out(2)))
    add(
        fake_dp,
        instructions=apply(parser.OFPActionGroup(1), parser.NXActionResubmitTable(in_port=0xFFF8, table_id=1), out(3)),
    )
    result = fake_dp.switch.trace(tcp_packet(MAC1, MAC1, "10.0.0.1", VIP, 40000, 80), in_port=9)
    assert result.ports == [1, 3]
    assert result.outputs[0][1]["eth_dst"] == MAC2 and result.outputs[1][1]["eth_dst"] == MAC1


def test_learn_installs_the_entry_its_specs_describe(fake_dp: FakeDatapath) -> None:
    learn = parser.NXActionLearn(
        table_id=2,
        priority=200,
        idle_timeout=10,
        cookie=0x42,
        flags=1,
        specs=[
            parser.NXFlowSpecMatch(src=ETH_IPV4, dst=("eth_type_nxm", 0), n_bits=16),
            parser.NXFlowSpecMatch(src=6, dst=("ip_proto_nxm", 0), n_bits=8),
            parser.NXFlowSpecMatch(src=("ipv4_src_nxm", 8), dst=("ipv4_src_nxm", 8), n_bits=24),
            parser.NXFlowSpecMatch(src=("tcp_src_nxm", 0), dst=("tcp_dst_nxm", 0), n_bits=16),
            parser.NXFlowSpecLoad(src=0x0A000063, dst=("ipv4_dst_nxm", 0), n_bits=32),
        ],
    )
    with pytest.raises(SwitchError, match="MATCH_INCONSISTENT"):
        add(fake_dp, instructions=apply(learn))
    add(fake_dp, match=parser.OFPMatch(eth_type=ETH_IPV4, ip_proto=6), instructions=apply(learn))
    fake_dp.switch.trace(syn(src="10.1.2.3", sport=40001), in_port=9)
    [entry] = fake_dp.switch.dump_flows(2)
    assert entry.match == {
        "eth_type": ETH_IPV4,
        "ip_proto": 6,
        "ipv4_src": ("10.1.2.0", "255.255.255.0"),
        "tcp_dst": 40001,
    }
    assert (entry.priority, entry.cookie, entry.idle_timeout, entry.flags) == (200, 0x42, 10, ofp.OFPFF_SEND_FLOW_REM)
    assert entry.instructions[0].actions[0].value == "10.0.0.99"


# -- conntrack ---------------------------------------------------------------------------------------------------------

ZONE = 7
MEMBER = "10.0.0.12"
CLIENT = "10.0.0.1"
EST, RPL_EST = CT_TRK | CT_EST, CT_TRK | CT_EST | CT_RPL


def ct_lookup(table: int, zone: int = ZONE) -> Any:
    """``ct(zone=Z,nat,table=T)``."""
    return parser.NXActionCT(
        flags=0, zone_src="", zone_ofs_nbits=zone, recirc_table=table, alg=0, actions=[parser.NXActionNAT(flags=0)]
    )


def ct_commit(mark: int = 5, zone: int = ZONE) -> Any:
    """``ct(commit,zone=Z,nat(dst=MEMBER:8080),exec(set_field:mark->ct_mark))``, without recirculation."""
    nat = parser.NXActionNAT(flags=NX_NAT_F_DST, range_ipv4_min=MEMBER, range_proto_min=8080, range_proto_max=8080)
    return parser.NXActionCT(
        flags=NX_CT_F_COMMIT,
        zone_src="",
        zone_ofs_nbits=zone,
        recirc_table=NX_CT_RECIRC_NONE,
        alg=0,
        actions=[nat, parser.OFPActionSetField(ct_mark=mark)],
    )


def ct_match(state: int, mask: int | None = None, **fields: Any) -> Any:
    """TCP/IPv4 with the ``state`` bits (under ``mask``, default the same bits)."""
    return parser.OFPMatch(eth_type=ETH_IPV4, ip_proto=6, ct_state=(state, state if mask is None else mask), **fields)


def nat_switch(dp: FakeDatapath) -> None:
    """Tracker to table 1, which commits new connections (out 4, commit, out 2), est with mark 5 to 3, replies to 1."""
    add(dp, match=tcp_to_vip(), instructions=apply(ct_lookup(1)))
    add(
        dp,
        match=parser.OFPMatch(eth_type=ETH_IPV4, ip_proto=6, ipv4_src=MEMBER, tcp_src=8080),
        instructions=apply(ct_lookup(1)),
    )
    add(dp, table=1, match=ct_match(CT_TRK | CT_NEW), instructions=apply(out(4), ct_commit(), out(2)))
    add(dp, table=1, match=ct_match(EST, RPL_EST, ct_mark=5), instructions=apply(out(3)))
    add(dp, table=1, match=ct_match(RPL_EST), instructions=apply(out(1)))


def member_reply(flags: int = TCP_SYN | TCP_ACK) -> dict[str, Any]:
    """What the member answers the client from its service port."""
    return tcp_packet(MAC2, MAC1, MEMBER, CLIENT, 8080, 40000, flags)


def test_a_committed_syn_is_natted_and_its_reply_un_natted(fake_dp: FakeDatapath) -> None:
    nat_switch(fake_dp)
    sw = fake_dp.switch
    first = sw.trace(syn(), in_port=9)
    assert first.ports == [4, 2]
    seen, sent = first.outputs[0][1], first.outputs[1][1]
    assert (seen["ct_state"], seen["ct_zone"], seen["ct_mark"], seen["ipv4_dst"]) == (CT_TRK | CT_NEW, ZONE, 0, VIP)
    assert (sent["ipv4_dst"], sent["tcp_dst"]) == (MEMBER, 8080) and "ct_state" not in sent  # cleared after ct
    [conn] = sw.conntrack.values()
    assert conn.orig == CtTuple(ZONE, 6, CLIENT, VIP, 40000, 80) and sw.conntrack[conn.orig] is conn
    assert (conn.nat_ip, conn.nat_port, conn.mark, conn.replied) == (MEMBER, 8080, 5, False)
    assert conn.reply == CtTuple(ZONE, 6, MEMBER, CLIENT, 8080, 40000)
    back = sw.trace(member_reply(), in_port=2)
    assert back.ports == [1]
    got = back.outputs[0][1]
    assert (got["ipv4_src"], got["tcp_src"], got["ipv4_dst"]) == (VIP, 80, CLIENT)
    assert (got["ct_state"], got["ct_mark"]) == (RPL_EST | CT_SNAT, 5) and conn.replied


def test_a_connection_is_established_with_its_mark_once_a_reply_passed(fake_dp: FakeDatapath) -> None:
    nat_switch(fake_dp)
    sw = fake_dp.switch
    sw.trace(syn(), in_port=9)
    again = sw.trace(syn(), in_port=9)  # a retransmitted SYN: still new, but the NAT and mark are the connection's
    assert again.ports == [4, 2] and len(sw.conntrack) == 1
    seen = again.outputs[0][1]
    assert (seen["ct_state"], seen["ct_mark"], seen["ipv4_dst"]) == (CT_TRK | CT_NEW | CT_DNAT, 5, MEMBER)
    sw.trace(member_reply(), in_port=2)
    ack = sw.trace(tcp_packet(MAC1, MAC2, CLIENT, VIP, 40000, 80, TCP_ACK), in_port=9)
    assert ack.ports == [3]
    got = ack.outputs[0][1]
    assert (got["ct_state"], got["ct_mark"], got["ipv4_dst"], got["tcp_dst"]) == (EST | CT_DNAT, 5, MEMBER, 8080)


def test_an_untracked_packet_is_new_unmarked_and_not_rewritten(fake_dp: FakeDatapath) -> None:
    add(fake_dp, match=tcp_to_vip(ct_state=(0, CT_TRK)), instructions=apply(ct_lookup(1)))
    add(fake_dp, table=1, match=ct_match(CT_TRK | CT_NEW), instructions=apply(out(1)))
    result = fake_dp.switch.trace(syn(), in_port=9)
    assert result.ports == [1] and not fake_dp.switch.conntrack
    got = result.outputs[0][1]
    assert (got["ct_state"], got["ct_zone"], got["ct_mark"], got["ipv4_dst"], got["tcp_dst"]) == (
        CT_TRK | CT_NEW,
        ZONE,
        0,
        VIP,
        80,
    )


def test_recirculation_forks_the_copy_to_its_table_after_the_pass(fake_dp: FakeDatapath) -> None:
    add(fake_dp, match=tcp_to_vip(), instructions=apply(ct_lookup(1), out(5)))
    add(fake_dp, table=1, match=ct_match(CT_TRK | CT_NEW), instructions=apply(out(6), out(ofp.OFPP_CONTROLLER)))
    result = fake_dp.switch.trace(syn(), in_port=9)
    assert result.ports == [5, 6]  # the rest of the list runs first, on the untracked packet (as in Open vSwitch)
    assert "ct_state" not in result.outputs[0][1] and result.outputs[1][1]["ct_state"] == CT_TRK | CT_NEW
    assert "recirculation to table 1" in result.log
    match = result.packet_ins[0].to_msg(fake_dp).match
    assert (match["ct_state"], match["ct_zone"]) == (CT_TRK | CT_NEW, ZONE) and result.packet_ins[0].table_id == 1


def test_without_recirculation_the_packet_goes_on_natted_and_untracked(fake_dp: FakeDatapath) -> None:
    add(
        fake_dp,
        match=tcp_to_vip(),
        instructions=apply(ct_commit(), out(2), parser.NXActionResubmitTable(in_port=0xFFF8, table_id=1)),
    )
    add(fake_dp, table=1, match=ct_match(0, CT_TRK), instructions=apply(out(3)))
    result = fake_dp.switch.trace(syn(), in_port=9)
    assert result.ports == [2, 3] and "recirculation to table 1" not in result.log
    assert all(pkt["ipv4_dst"] == MEMBER and pkt["tcp_dst"] == 8080 for _, pkt in result.outputs)
    assert len(fake_dp.switch.conntrack) == 1


def test_zones_keep_connections_apart_and_ct_flush_forgets_them(fake_dp: FakeDatapath) -> None:
    add(fake_dp, match=tcp_to_vip(tcp_src=40000), instructions=apply(ct_commit(zone=7), out(2)))
    add(fake_dp, match=tcp_to_vip(tcp_src=40001), instructions=apply(ct_commit(zone=8), out(2)))
    sw = fake_dp.switch
    sw.trace(syn(sport=40000), in_port=9)
    sw.trace(syn(sport=40001), in_port=9)
    assert sorted(key.zone for key in sw.conntrack) == [7, 8]
    sw.ct_flush(7)
    assert [key.zone for key in sw.conntrack] == [8]
    sw.ct_flush()
    assert sw.conntrack == {}
    add(
        fake_dp, match=parser.OFPMatch(eth_type=ETH_IPV4, ip_proto=6, ipv4_src=MEMBER), instructions=apply(ct_lookup(1))
    )
    add(fake_dp, table=1, match=ct_match(CT_TRK | CT_NEW), instructions=apply(out(1)))
    back = sw.trace(member_reply(), in_port=2)
    assert back.ports == [1] and back.outputs[0][1]["ipv4_src"] == MEMBER  # forgotten: no un-NAT


def _misaligned_commit() -> Any:
    """A commit whose nat (both range ends and ports: 28 bytes) os-ken serialises without its padding."""
    nat = parser.NXActionNAT(
        flags=NX_NAT_F_DST, range_ipv4_min=MEMBER, range_ipv4_max=MEMBER, range_proto_min=8080, range_proto_max=8080
    )
    return parser.NXActionCT(
        flags=NX_CT_F_COMMIT,
        zone_src="",
        zone_ofs_nbits=ZONE,
        recirc_table=NX_CT_RECIRC_NONE,
        alg=0,
        actions=[nat, parser.OFPActionSetField(ct_mark=1)],
    )


@pytest.mark.parametrize(
    ("match", "action", "code"),
    [
        (parser.OFPMatch(), ct_lookup(1), "OFPBAC_MATCH_INCONSISTENT"),
        (parser.OFPMatch(eth_type=0x86DD), ct_commit(), "OFPBAC_MATCH_INCONSISTENT"),
        (
            tcp_to_vip(),
            parser.NXActionCT(
                flags=0,
                zone_src="",
                zone_ofs_nbits=ZONE,
                recirc_table=1,
                alg=0,
                actions=[parser.OFPActionSetField(ct_mark=1)],
            ),
            "OFPBAC_BAD_ARGUMENT",
        ),
        (
            tcp_to_vip(),
            parser.NXActionCT(
                flags=NX_CT_F_COMMIT, zone_src="", zone_ofs_nbits=ZONE, recirc_table=1, alg=0, actions=[out(1)]
            ),
            "OFPBAC_BAD_ARGUMENT",
        ),
        (tcp_to_vip(), parser.OFPActionSetField(ct_mark=1), "OFPBAC_BAD_SET_ARGUMENT"),
        (tcp_to_vip(), _misaligned_commit(), "OFPBAC_BAD_LEN"),
    ],
)
def test_ct_flow_mods_open_vswitch_refuses_raise(fake_dp: FakeDatapath, match: Any, action: Any, code: str) -> None:
    with pytest.raises(SwitchError, match=code):
        add(fake_dp, match=match, instructions=apply(action))


def test_a_bucket_drops_its_ct_when_it_outputs_but_a_resubmitted_table_tracks(fake_dp: FakeDatapath) -> None:
    fake_dp.send_msg(
        parser.OFPGroupMod(
            fake_dp, ofp.OFPGC_ADD, ofp.OFPGT_SELECT, 1, [parser.OFPBucket(weight=1, actions=[ct_commit(), out(1)])]
        )
    )
    fake_dp.send_msg(
        parser.OFPGroupMod(
            fake_dp,
            ofp.OFPGC_ADD,
            ofp.OFPGT_SELECT,
            2,
            [parser.OFPBucket(weight=1, actions=[parser.NXActionResubmitTable(in_port=0xFFF8, table_id=1)])],
        )
    )
    add(fake_dp, match=tcp_to_vip(tcp_src=40000), instructions=apply(parser.OFPActionGroup(1)))
    add(fake_dp, match=tcp_to_vip(tcp_src=40001), instructions=apply(parser.OFPActionGroup(2)))
    add(fake_dp, table=1, match=tcp_to_vip(), instructions=apply(ct_commit(), out(2)))
    sw = fake_dp.switch
    skipped = sw.trace(syn(sport=40000), in_port=9)
    assert skipped.ports == [1] and skipped.outputs[0][1]["ipv4_dst"] == VIP and not sw.conntrack
    assert any("ct skipped" in line for line in skipped.log)
    tracked = sw.trace(syn(sport=40001), in_port=9)
    assert tracked.ports == [2] and tracked.outputs[0][1]["ipv4_dst"] == MEMBER and len(sw.conntrack) == 1
