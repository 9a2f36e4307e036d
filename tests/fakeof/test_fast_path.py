"""The framework's fast packet-in path (nlb_sdn.framework.use_fast_packet_in_path): the lean packet-in parser makes
the framework's messages, packet-ins skip the app's queue only while it is idle, and the same holds under ryu 4.34."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any, ClassVar

import pytest

from benchmarks import ofload
from nlb_sdn import framework
from nlb_sdn.framework import (
    MAIN_DISPATCHER,
    RyuApp,
    fast_path,
    hub,
    ofp_event,
    ofproto_v1_3 as ofp,
    ofproto_v1_3_parser as parser,
    set_ev_cls,
)

ROOT = Path(__file__).resolve().parents[2]
RYU_PYTHON = ROOT / ".venv-ryu" / "bin" / "python"
FRAME = bytes(range(74))


def packet_in_bytes(match: Any, data: bytes, total_len: int, xid: int = 5) -> bytes:
    """A switch's OFPT_PACKET_IN with ``match``, serialised as the benchmark's fake switch does."""
    msg = ofload.PacketIn(
        ofload.Datapath(),
        buffer_id=ofp.OFP_NO_BUFFER,
        total_len=total_len,
        reason=ofp.OFPR_NO_MATCH,
        table_id=1,
        cookie=0x0101000000000000,
        match=match,
        data=data,
    )
    return ofload.encode(msg, xid)


CASES = {
    "in_port only": (parser.OFPMatch(in_port=3), FRAME, len(FRAME)),
    "truncated punt": (parser.OFPMatch(in_port=0xFFFFFF00), FRAME[:64], 1514),
    "no frame": (parser.OFPMatch(in_port=2), b"", 0),
    "in_port and metadata": (parser.OFPMatch(in_port=3, metadata=0x42), FRAME, len(FRAME)),
    "tunnel id": (parser.OFPMatch(in_port=1, tunnel_id=9), FRAME, len(FRAME)),
}


@pytest.mark.parametrize("case", CASES)
def test_lean_packet_in_parser_makes_the_frameworks_message(case: str) -> None:
    raw = packet_in_bytes(*CASES[case])
    stock = parser.OFPPacketIn.parser(None, ofp.OFP_VERSION, ofp.OFPT_PACKET_IN, len(raw), 5, raw)
    lean = framework.parse_packet_in(None, ofp.OFP_VERSION, ofp.OFPT_PACKET_IN, len(raw), 5, raw)
    assert type(lean) is parser.OFPPacketIn
    assert str(lean) == str(stock) and lean.to_jsondict() == stock.to_jsondict()
    assert (lean.buf, lean.data, lean.match.length) == (stock.buf, stock.data, stock.match.length)
    assert str(lean.match.fields) == str(stock.match.fields)
    assert dict(lean.match.items()) == dict(stock.match.items())


class Recorder(RyuApp):
    """An app that records the packet-ins and flow-removeds it handles, and in which thread."""

    OFP_VERSIONS: ClassVar[list[int]] = [ofp.OFP_VERSION]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[tuple[str, Any]] = []
        self.fail = False

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def packet_in(self, ev: Any) -> None:
        if self.fail:
            raise RuntimeError("handler failure")
        self.seen.append(("packet_in", ev.msg.xid))

    @set_ev_cls(ofp_event.EventOFPFlowRemoved, MAIN_DISPATCHER)
    def flow_removed(self, ev: Any) -> None:
        self.seen.append(("flow_removed", ev.msg.xid))


def packet_in_event(xid: int) -> Any:
    msg = parser.OFPPacketIn(
        None,
        buffer_id=ofp.OFP_NO_BUFFER,
        total_len=74,
        reason=0,
        table_id=1,
        cookie=0,
        match=parser.OFPMatch(in_port=1),
        data=FRAME,
    )
    msg.xid = xid
    return ofp_event.EventOFPPacketIn(msg)


def flow_removed_event(xid: int) -> Any:
    msg = parser.OFPFlowRemoved(None)
    msg.xid = xid
    return ofp_event.EventOFPFlowRemoved(msg)


@pytest.fixture
def app() -> Any:
    """A Recorder on the fast path, its event loop waiting on its queue."""
    recorder = Recorder()
    framework.handler.register_instance(recorder)  # what the app manager does when it starts an app
    framework.use_fast_packet_in_path(recorder)
    thread = hub.spawn(recorder._event_loop)
    hub.sleep(0)
    yield recorder
    recorder.is_active = False
    hub.kill(thread)


def test_an_idle_app_handles_a_packet_in_at_once_in_the_senders_thread(app: Any) -> None:
    app._send_event(packet_in_event(1), MAIN_DISPATCHER)
    assert app.seen == [("packet_in", 1)]
    app._send_event(flow_removed_event(2), MAIN_DISPATCHER)
    assert app.seen == [("packet_in", 1)], "other events still go through the queue"
    hub.sleep(0)
    assert app.seen == [("packet_in", 1), ("flow_removed", 2)]


def test_a_packet_in_waits_behind_events_the_app_has_not_handled(app: Any) -> None:
    app._send_event(flow_removed_event(1), MAIN_DISPATCHER)
    app._send_event(packet_in_event(2), MAIN_DISPATCHER)
    assert app.seen == []
    for _ in range(3):
        hub.sleep(0)
    assert app.seen == [("flow_removed", 1), ("packet_in", 2)]


def test_a_packet_in_in_another_state_reaches_no_handler(app: Any) -> None:
    app._send_event(packet_in_event(1), framework.CONFIG_DISPATCHER)
    hub.sleep(0)
    assert app.seen == []


def test_a_failing_handler_is_logged_and_the_sender_carries_on(app: Any, caplog: pytest.LogCaptureFixture) -> None:
    app.fail = True
    app._send_event(packet_in_event(1), MAIN_DISPATCHER)
    assert "handler packet_in failed" in caplog.text
    app.fail = False
    app._send_event(packet_in_event(2), MAIN_DISPATCHER)
    assert app.seen == [("packet_in", 2)]


def test_the_fast_path_installs_the_lean_loops_and_parser() -> None:
    framework.use_fast_packet_in_path(Recorder())
    controller = __import__(f"{framework.NAME}.controller.controller", fromlist=["Datapath"])
    assert parser._MSG_PARSERS[ofp.OFPT_PACKET_IN] is framework.parse_packet_in
    assert controller.Datapath._send_loop is fast_path._send_loop
    assert controller.Datapath._recv_loop.__name__ == "deactivate"


@pytest.mark.skipif(not RYU_PYTHON.exists(), reason="no ryu venv (scripts/ryu-venv.sh)")
def test_the_fast_path_under_ryu() -> None:
    code = (
        "from nlb_sdn import framework as f\n"
        "from nlb_sdn.framework import fast_path\n"
        "from ryu.controller import controller\n"
        "from ryu.ofproto import ofproto_v1_3 as ofp, ofproto_v1_3_parser as p\n"
        "class App(f.RyuApp):\n"
        "    pass\n"
        "f.use_fast_packet_in_path(App())\n"
        "assert p._MSG_PARSERS[ofp.OFPT_PACKET_IN] is f.parse_packet_in\n"
        "assert controller.Datapath._send_loop is fast_path._send_loop\n"
        "m = p.OFPPacketIn(None, buffer_id=ofp.OFP_NO_BUFFER, total_len=74, reason=0, table_id=1, cookie=7,\n"
        "                  match=p.OFPMatch(in_port=3), data=bytes(range(74)))\n"
        "raw = bytearray(8) + bytearray(p.struct.pack(ofp.OFP_PACKET_IN_PACK_STR, m.buffer_id, 74, 0, 1, 7))\n"
        "m.match.serialize(raw, 24)\n"
        "raw += bytes(2) + m.data\n"
        "p.struct.pack_into(ofp.OFP_HEADER_PACK_STR, raw, 0, 4, ofp.OFPT_PACKET_IN, len(raw), 5)\n"
        "raw = bytes(raw)\n"
        "a = p.OFPPacketIn.parser(None, 4, ofp.OFPT_PACKET_IN, len(raw), 5, raw)\n"
        "b = f.parse_packet_in(None, 4, ofp.OFPT_PACKET_IN, len(raw), 5, raw)\n"
        "assert str(a) == str(b) and a.match['in_port'] == b.match['in_port'] == 3, (str(a), str(b))\n"
        "print(f.NAME, 'ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "NLB_SDN_FRAMEWORK"}
    env["NLB_SDN_FRAMEWORK"] = "ryu"
    proc = subprocess.run([str(RYU_PYTHON), "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ryu ok"
