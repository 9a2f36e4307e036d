"""The fast path's guard: it patches the framework only on a tested version whose internals have the expected shape,
fails loudly (naming the version and NLB_SDN_FAST_PATH=off) otherwise, and NLB_SDN_FAST_PATH=off patches nothing."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from nlb_sdn import framework
from nlb_sdn.framework import fast_path, ofproto_v1_3 as ofp, ofproto_v1_3_parser as parser

controller = framework.import_framework_module("controller.controller")
STOCK_PACKET_IN_PARSER = parser.OFPPacketIn.parser


def stock_recv_loop(self: Any) -> None:
    """Stands in for the framework's Datapath._recv_loop."""


def stock_send_loop(self: Any) -> None:
    """Stands in for the framework's Datapath._send_loop."""


@pytest.fixture
def stock(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The framework as before any fast path (restored afterwards): its packet-in parser, stand-in loops, gc default."""
    monkeypatch.delenv(fast_path.FAST_PATH_ENV, raising=False)
    monkeypatch.setitem(parser._MSG_PARSERS, ofp.OFPT_PACKET_IN, parser.OFPPacketIn.parser)
    monkeypatch.setattr(controller.Datapath, "_recv_loop", stock_recv_loop)
    monkeypatch.setattr(controller.Datapath, "_send_loop", stock_send_loop)
    threshold = gc.get_threshold()
    gc.set_threshold(700, *threshold[1:])
    yield
    gc.set_threshold(*threshold)


def assert_nothing_patched(app: framework.RyuApp) -> None:
    assert parser._MSG_PARSERS[ofp.OFPT_PACKET_IN] == parser.OFPPacketIn.parser
    assert controller.Datapath._recv_loop is stock_recv_loop
    assert controller.Datapath._send_loop is stock_send_loop
    assert gc.get_threshold()[0] == 700
    assert "_send_event" not in vars(app)


def test_the_tested_framework_passes_and_is_patched(stock: None) -> None:
    app = framework.RyuApp()
    assert framework.TESTED_VERSIONS[framework.NAME] == framework.VERSION
    assert framework.fast_path_problems(app) == []
    assert framework.use_fast_packet_in_path(app) is True
    assert parser._MSG_PARSERS[ofp.OFPT_PACKET_IN] is framework.parse_packet_in
    assert controller.Datapath._send_loop is fast_path._send_loop
    assert "_send_event" in vars(app)
    assert framework.fast_path_problems(app) == [], "a second app may ask again"


def test_an_untested_version_fails_naming_it_and_the_way_out(stock: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fast_path, "VERSION", "99.0")
    app = framework.RyuApp()
    with pytest.raises(framework.FastPathUnsupported) as failure:
        framework.use_fast_packet_in_path(app)
    distribution = fast_path.DISTRIBUTIONS[framework.NAME]
    assert f"cannot run on {distribution} 99.0: it was tested with os-ken 3.1.0, ryu 4.34 only" in str(failure.value)
    assert "Set NLB_SDN_FAST_PATH=off" in str(failure.value)
    assert_nothing_patched(app)


def without(owner: Any, name: str) -> Callable[[pytest.MonkeyPatch], None]:
    return lambda monkeypatch: monkeypatch.delattr(owner, name)


def replaced(owner: Any, name: str, value: Any) -> Callable[[pytest.MonkeyPatch], None]:
    return lambda monkeypatch: monkeypatch.setattr(owner, name, value)


def parsed_otherwise(cls: type, datapath: Any, version: int, msg_type: int, msg_len: int, xid: int, buf: bytes) -> Any:
    """A framework packet-in parser that reads the cookie from somewhere else."""
    msg = STOCK_PACKET_IN_PARSER(datapath, version, msg_type, msg_len, xid, buf)
    msg.cookie += 1
    return msg


CHANGES = {
    "a Datapath method is missing": (without(controller.Datapath, "_close_write"), "Datapath._close_write is missing"),
    "the message parser takes other arguments": (
        replaced(framework.ofproto_parser, "msg", lambda datapath, buf: None),
        "ofproto_parser.msg('datapath', 'buf') is not (datapath, version",
    ),
    "the app's _send_event takes other arguments": (
        replaced(framework.RyuApp, "_send_event", lambda self, ev: None),
        "._send_event('self', 'ev') is not (self, ev, state)",
    ),
    "the packet-in struct changed": (
        replaced(ofp, "OFP_PACKET_IN_PACK_STR", "!IHBBQI"),
        "OFP_PACKET_IN_PACK_STR is '!IHBBQI', not '!IHBBQ'",
    ),
    "the OXM in_port header changed": (replaced(ofp, "OXM_OF_IN_PORT", 0x80000008), "OXM_OF_IN_PORT is"),
    "the framework parses packet-ins otherwise": (
        replaced(parser.OFPPacketIn, "parser", classmethod(parsed_otherwise)),
        "the lean parser reads a sample packet-in as",
    ),
    "the packet-in parsers table is gone": (without(parser, "_MSG_PARSERS"), "_MSG_PARSERS has no packet-in parser"),
    "Datapath keeps its send queue elsewhere": (
        replaced(controller.Datapath, "__init__", lambda self, socket, address: None),
        "Datapath.__init__ sets no send_q",
    ),
}


@pytest.mark.parametrize("change", CHANGES)
def test_a_changed_internal_fails_naming_it(change: str, stock: None) -> None:
    apply_change, problem = CHANGES[change]
    app = framework.RyuApp()
    with pytest.MonkeyPatch.context() as monkeypatch:
        apply_change(monkeypatch)
        with pytest.raises(framework.FastPathUnsupported) as failure:
            framework.use_fast_packet_in_path(app)
    assert problem in str(failure.value)
    assert f"{fast_path.DISTRIBUTIONS[framework.NAME]} {framework.VERSION}" in str(failure.value)
    assert_nothing_patched(app)


def test_an_app_whose_queue_cannot_tell_it_is_idle_fails(stock: None) -> None:
    app = framework.RyuApp()
    app.events = object()
    with pytest.raises(framework.FastPathUnsupported, match=r"RyuApp\.events has no empty\(\)|events has no getting"):
        framework.use_fast_packet_in_path(app)


@pytest.mark.parametrize("value", ["off", "OFF", " off "])
def test_the_opt_out_patches_nothing(value: str, stock: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NLB_SDN_FAST_PATH", value)
    monkeypatch.setattr(fast_path, "VERSION", "99.0")  # and skips the guard: the way to run on an untested version
    app = framework.RyuApp()
    assert framework.use_fast_packet_in_path(app) is False
    assert_nothing_patched(app)


def test_a_bogus_setting_is_an_error(stock: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NLB_SDN_FAST_PATH", "maybe")
    with pytest.raises(ValueError, match="NLB_SDN_FAST_PATH='maybe': expected 'on' or 'off'"):
        framework.use_fast_packet_in_path(framework.RyuApp())


def test_on_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NLB_SDN_FAST_PATH", raising=False)
    assert fast_path.fast_path_setting() is framework.FastPathSetting.ON
    monkeypatch.setenv("NLB_SDN_FAST_PATH", "on")
    assert fast_path.fast_path_setting() is framework.FastPathSetting.ON
