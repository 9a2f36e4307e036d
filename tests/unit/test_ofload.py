"""The cbench-like generator (benchmarks/ofload.py): its messages parse as os-ken parses a switch's, its frames are
SYNs the classifier takes, and a short run against the learning switch gets answers."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import ofload
from nlb_sdn.config import parse_config, vip_mac
from nlb_sdn.core.frames import TcpSegment, parse_frame
from nlb_sdn.framework import ofproto_v1_3 as ofp, ofproto_v1_3_parser as parser

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "ofload.py"


def parse(raw: bytes):
    """Parse one message as os-ken's controller does."""
    version, msg_type, msg_len, xid = parser.ofproto_parser.header(raw)
    assert msg_len == len(raw)
    return parser.ofproto_parser.msg(ofload.Datapath(), version, msg_type, msg_len, xid, raw)


def args(**overrides) -> argparse.Namespace:
    namespace = ofload.build_parser().parse_args([])
    for key, value in overrides.items():
        setattr(namespace, key, value)
    return namespace


def test_packet_in_fast_path_is_the_framework_serialization_and_parses_back():
    encoder = ofload.PacketInEncoder(table_id=1, cookie=0x0101000000000000, reason=ofp.OFPR_ACTION)
    frame = ofload.syn_frame("02:00:00:00:01:01", "02:4e:0a:00:00:64", "10.100.0.1", "10.0.0.100", 40000, 80, 7)
    fast = encoder.encode(3, frame, xid=42)
    assert fast == ofload.encode(encoder.message(3, frame), 42)
    msg = parse(fast)
    assert isinstance(msg, parser.OFPPacketIn)
    assert (msg.xid, msg.buffer_id, msg.total_len, msg.reason, msg.table_id, msg.cookie) == (
        42,
        ofp.OFP_NO_BUFFER,
        len(frame),
        ofp.OFPR_ACTION,
        1,
        0x0101000000000000,
    )
    assert msg.match["in_port"] == 3
    assert msg.data == frame


def test_frames_are_distinct_syns_to_the_vip_the_classifier_accepts():
    settings = args(switches=2)
    frames = set()
    for index in range(2):
        syns = ofload.SynFrames(settings, index)
        for k in (0, 1, 2, 65533, 65534, 65535, 200_000):
            frame, in_port = syns.frame(k)
            assert len(frame) == 74
            assert 1 <= in_port <= settings.hosts
            segment = parse_frame(frame, len(frame))
            assert isinstance(segment, TcpSegment) and segment.is_pure_syn
            assert (segment.dst_ip, segment.dst_port) == ("10.0.0.100", 80)
            frames.add((segment.src_ip, segment.src_port))
    assert len(frames) == 14


def test_packed_frames_are_the_packet_library_frames():
    settings = args(switches=3, hosts=3)
    for index in range(3):
        syns = ofload.SynFrames(settings, index)
        for k in (0, 1, 5, 65533, 65534, 65535, 200_000, 10**7, 4 * 10**9):
            port, mac, _ip = ofload.gateway_hosts(index, settings.hosts)[k % settings.hosts]
            client_ip, client_port = ofload.client_address(index, k)
            expected = ofload.syn_frame(
                mac,
                vip_mac(settings.vip),
                client_ip,
                settings.vip,
                client_port,
                settings.vport,
                (k * 2654435761) & 0xFFFFFFFF,
            )
            assert syns.frame(k) == (expected, port)


@pytest.mark.parametrize(
    "mp_type,reply_cls",
    [
        (ofp.OFPMP_PORT_DESC, parser.OFPPortDescStatsReply),
        (ofp.OFPMP_FLOW, parser.OFPFlowStatsReply),
        (ofp.OFPMP_DESC, parser.OFPDescStatsReply),
        (ofp.OFPMP_AGGREGATE, parser.OFPAggregateStatsReply),
    ],
)
def test_multipart_replies_parse(mp_type, reply_cls):
    msg = parse(ofload.encode(ofload.MultipartReply(ofload.Datapath(), mp_type, ofload.multipart_body(mp_type)), 9))
    assert isinstance(msg, reply_cls) and msg.xid == 9


def test_handshake_replies_parse():
    dp = ofload.Datapath()
    features = parse(
        ofload.encode(
            ofload.FeaturesReply(
                dp, datapath_id=0xAB, n_buffers=0, n_tables=254, auxiliary_id=0, capabilities=ofp.OFPC_FLOW_STATS
            ),
            5,
        )
    )
    assert (features.datapath_id, features.n_tables, features.xid) == (0xAB, 254, 5)
    assert isinstance(parse(ofload.encode(parser.OFPBarrierReply(dp), 6)), parser.OFPBarrierReply)
    config = parse(ofload.encode(ofload.GetConfigReply(dp, flags=0, miss_send_len=128), 7))
    assert config.miss_send_len == 128
    role = parse(ofload.encode(ofload.RoleReply(dp, role=ofp.OFPCR_ROLE_EQUAL, generation_id=3), 8))
    assert (role.role, role.generation_id) == (ofp.OFPCR_ROLE_EQUAL, 3)


def test_launch_config_is_valid_and_lists_every_fake_switch():
    config = parse_config(ofload.nlb_config(args(switches=4, hosts=3), rest_port=18080), "test")
    assert [s.dpid for s in config.fabric.switches] == [1, 2, 3, 4]
    assert len(config.fabric.hosts) == 4 * 3 + len(ofload.MEMBERS)
    assert config.vips[0].address == "10.0.0.100" and config.controller.rest.port == 18080


def test_percentile():
    assert ofload.percentile([], 50) is None
    assert ofload.percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert ofload.percentile([0.0, 10.0], 99) == pytest.approx(9.9)


def test_short_run_against_the_learning_switch(tmp_path):
    out = tmp_path / "ofload.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--launch",
            "learning",
            "--switches",
            "1",
            "--duration",
            "2",
            "--warmup",
            "0.5",
            "--out",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "ofload throughput learning" in proc.stderr.splitlines()[-1]
    report = json.loads(out.read_text())
    assert set(report) == {"benchmark", "settings", "environment", "results"}
    assert report["settings"]["mode"] == "throughput" and report["settings"]["switches"] == 1
    results = report["results"]
    assert results["measured_responses"] > 0 and results["responses_per_s"] > 0
    assert results["latency_ms"]["p50"] > 0 and results["latency_ms"]["p99"] >= results["latency_ms"]["p50"]
    assert results["stop_reason"] == "duration" and results["timeouts"] == 0
    (switch,) = results["per_switch"]
    assert switch["dpid"] == 1 and switch["responses"] >= switch["measured_responses"] > 0
    assert switch["received"]["features_request"] == 1 and switch["lost"] is None
    pid = results["controller"]["pid"]
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # stopped and reaped


def test_short_run_against_nlb_takes_the_fast_path_and_keeps_its_counters(tmp_path):
    out = tmp_path / "ofload.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--launch",
            "nlb",
            "--switches",
            "2",
            "--duration",
            "2",
            "--warmup",
            "0.5",
            "--out",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stderr
    results = json.loads(out.read_text())["results"]
    assert results["measured_responses"] > 0 and results["timeouts"] == 0
    assert results["unmatched_packet_outs"] == 0
    stats = results["controller"]["stats"]
    assert stats["errors"] == {} and stats["refused"] == {}
    assert stats["dropped"] == {"not_vip_service": 2}, "the two priming frames, nothing else"
    connections = stats["packet_in"]["new_connection"]
    assert stats["packet_in"]["total"] == connections + 2 == stats["packet_out"] + 2
    assert stats["connections"]["total"] == connections
    for switch in results["per_switch"]:
        by_table = switch["flow_mods_by_table"]
        assert by_table["1"] >= switch["responses"] and by_table["2"] >= switch["responses"]
        *rewrite, onward = switch["sample_packet_out_actions"]  # the SYN goes out as its connection entry sends it
        assert [action.split("=")[0] for action in rewrite] == [
            "OFPActionSetField(eth_dst",
            "OFPActionSetField(ipv4_dst",
            "OFPActionSetField(tcp_dst",
        ], rewrite
        assert "NXActionResubmitTable" in onward and "table_id=3" in onward, onward
