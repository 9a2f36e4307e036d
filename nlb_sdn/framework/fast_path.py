"""The packet-in fast path: lean datapath loops, a cheaper packet-in parser, and packet-ins handed to an idle app
without the event-queue hop (docs/architecture.md, "Fast path for packet-ins"; docs/framework.md).

It replaces framework internals (Datapath's receive and send loops, the OpenFlow 1.3 packet-in parser, the app's
``_send_event``), so :func:`use_fast_packet_in_path` first checks that the framework is a version it was tested with
(TESTED_VERSIONS) and that every internal it relies on is there with the expected shape, and raises
FastPathUnsupported otherwise. ``NLB_SDN_FAST_PATH=off`` runs the app on the framework's stock path instead.
"""

from __future__ import annotations

import gc
import inspect
import logging
import os
import ssl
import struct
from collections.abc import Callable
from enum import Enum
from types import ModuleType
from typing import Any

from nlb_sdn.framework.api import (
    DEAD_DISPATCHER,
    DISTRIBUTIONS,
    NAME,
    VERSION,
    RyuApp,
    handler,
    hub,
    import_framework_module,
    ofp_event,
    ofproto_parser,
    ofproto_v1_3,
    ofproto_v1_3_parser,
)

_LOG = logging.getLogger("nlb_sdn.framework")

FAST_PATH_ENV = "NLB_SDN_FAST_PATH"
"""The environment variable that turns the fast path off (``off``) for apps that ask for it; ``on`` by default."""
TESTED_VERSIONS = {"os_ken": "3.1.0", "ryu": "4.34"}
"""The framework versions the fast path was tested with, by framework package."""


class FastPathSetting(Enum):
    """The values of NLB_SDN_FAST_PATH."""

    ON = "on"
    OFF = "off"


class FastPathUnsupported(RuntimeError):
    """The fast path was asked for on a framework it was not tested with, or whose internals differ from its own."""


# The OpenFlow 1.3 wire layout that the lean loops and parser read (OpenFlow 1.3.5, A.1 and A.4.1). The guard checks
# that the framework's constants say the same (_LAYOUT_CONSTANTS).
OFP_HEADER = struct.Struct("!BBHI")
"""ofp_header: version, type, length, xid."""
PACKET_IN_FIXED = struct.Struct("!IHBBQ")
"""ofp_packet_in after the header: buffer_id, total_len, reason, table_id, cookie."""
IN_PORT_MATCH = struct.Struct("!HHII")
"""An ofp_match of in_port alone: type, length, one OXM header and its 32-bit value (4 bytes of padding follow)."""
IN_PORT_MATCH_LEN = 12
"""The length field of an in_port-only match (without its padding)."""
PACKET_IN_MATCH_AT = OFP_HEADER.size + PACKET_IN_FIXED.size
"""Where a packet-in's match starts."""
PACKET_IN_DATA_AT = PACKET_IN_MATCH_AT + 16 + 2
"""Where the frame starts after an in_port match: the match padded to 8 bytes, then 2 bytes of padding."""
OFPT_PACKET_IN = 10
"""The message type of a packet-in."""
OFPMT_OXM = 1
"""The match type of an OpenFlow Extensible Match."""
OXM_OF_IN_PORT = 0x80000004
"""The OXM header of in_port: class OPENFLOW_BASIC, field 0, no mask, 4 bytes."""
_LAYOUT_CONSTANTS = {
    "OFP_HEADER_PACK_STR": OFP_HEADER.format,
    "OFP_HEADER_SIZE": OFP_HEADER.size,
    "OFP_PACKET_IN_PACK_STR": PACKET_IN_FIXED.format,
    "OFP_MATCH_SIZE": 8,
    "OFP_PACKET_IN_SIZE": PACKET_IN_MATCH_AT + 8,
    "OFPT_PACKET_IN": OFPT_PACKET_IN,
    "OFPMT_OXM": OFPMT_OXM,
    "OXM_OF_IN_PORT": OXM_OF_IN_PORT,
}

GC_YOUNG_THRESHOLD = 10_000
"""Allocations between collections of the youngest generation on the fast path (Python's default is 700)."""
RECEIVE_SIZE = 65536
"""Bytes the lean receive loop asks the socket for at a time (the framework's own loop asks for one header)."""


def _receive_loop(datapath: Any) -> None:
    """``Datapath._recv_loop`` with one system call per read of whatever has arrived, not two per message.

    The framework's loop reads an 8-byte header, then the rest of that message, then the next header. This one reads
    up to RECEIVE_SIZE bytes and takes every complete message from them; each is parsed by the framework's parser and
    delivered exactly as the framework delivers it (events to the observing apps, then the ofp_event brick's own
    handlers), in order. Like the original it yields to other green threads after every 2048 messages.
    """
    buf = bytearray()
    count = 0
    while datapath.state != DEAD_DISPATCHER:
        try:
            data = datapath.socket.recv(RECEIVE_SIZE)
        except (TimeoutError, ssl.SSLError):
            continue
        except (OSError, EOFError):
            break
        if not data:
            break
        buf += data
        offset, size = 0, len(buf)
        while size - offset >= OFP_HEADER.size:
            version, msg_type, msg_len, xid = OFP_HEADER.unpack_from(buf, offset)
            msg_len = max(msg_len, OFP_HEADER.size)  # as the framework: a bad length skips one header
            if size - offset < msg_len:
                break
            msg = ofproto_parser.msg(datapath, version, msg_type, msg_len, xid, buf[offset : offset + msg_len])
            offset += msg_len
            if msg:
                _deliver(datapath, msg)
            count += 1
            if count > 2048:
                count = 0
                hub.sleep(0)
        del buf[:offset]


def _deliver(datapath: Any, msg: Any) -> None:
    """Hand one parsed message to the observing apps and the ofp_event brick's handlers, as the framework does."""
    ev = ofp_event.ofp_msg_to_ev(msg)
    brick = datapath.ofp_brick
    if brick is None:
        return
    state = datapath.state
    brick.send_event_to_observers(ev, state)
    for brick_handler in [h for h in brick.get_handlers(ev) if state in h.callers[ev.__class__].dispatchers]:
        brick_handler(ev)


def _send_loop(datapath: Any) -> None:
    """``Datapath._send_loop`` writing everything queued so far with one system call, not one per queued buffer."""
    try:
        while datapath.state != DEAD_DISPATCHER:
            buf, close_socket = datapath.send_q.get()
            datapath._send_q_sem.release()
            chunks = [buf]
            while not close_socket and not datapath.send_q.empty():
                buf, close_socket = datapath.send_q.get(block=False)
                datapath._send_q_sem.release()
                chunks.append(buf)
            datapath.socket.sendall(b"".join(chunks) if len(chunks) > 1 else chunks[0])
            if close_socket:
                break
    except TimeoutError:
        _LOG.debug("socket timed out while sending to the switch at %s", datapath.address)
    except OSError as exc:
        _LOG.debug("socket error while sending to the switch at %s: [%s] %s", datapath.address, exc.errno, exc.strerror)
    finally:
        queue = datapath.send_q
        datapath.send_q = None
        try:
            while queue.get(block=False):
                datapath._send_q_sem.release()
        except hub.QueueEmpty:
            pass
        datapath._close_write()


def parse_packet_in(datapath: Any, version: int, msg_type: int, msg_len: int, xid: int, buf: Any) -> Any:
    """``OFPPacketIn.parser``, cheaper for what Open vSwitch sends on a table miss: a match of in_port alone.

    The message is the framework's OFPPacketIn with the same fields (its match has the same OXM fields, length and
    legacy ``fields`` list); the generic match parser, which costs half of a packet-in's parsing, is skipped. Any
    other match (metadata, tunnel fields, ...) goes to the framework's parser.
    """
    if len(buf) < PACKET_IN_DATA_AT:
        return ofproto_v1_3_parser.OFPPacketIn.parser(datapath, version, msg_type, msg_len, xid, buf)
    match_type, match_len, oxm_header, in_port = IN_PORT_MATCH.unpack_from(buf, PACKET_IN_MATCH_AT)
    if (match_type, match_len, oxm_header) != (OFPMT_OXM, IN_PORT_MATCH_LEN, OXM_OF_IN_PORT):
        return ofproto_v1_3_parser.OFPPacketIn.parser(datapath, version, msg_type, msg_len, xid, buf)
    msg = ofproto_v1_3_parser.OFPPacketIn(datapath)
    msg.set_headers(version, msg_type, msg_len, xid)
    msg.set_buf(buf)
    msg.buffer_id, msg.total_len, msg.reason, msg.table_id, msg.cookie = PACKET_IN_FIXED.unpack_from(
        msg.buf, OFP_HEADER.size
    )
    match = ofproto_v1_3_parser.OFPMatch(_ordered_fields=[("in_port", in_port)])
    match.length = match_len
    in_port_field = ofproto_v1_3_parser.MTInPort(oxm_header, in_port)
    in_port_field.length = IN_PORT_MATCH_LEN - 4
    match.fields.append(in_port_field)
    msg.match = match
    data = msg.buf[PACKET_IN_DATA_AT:]
    msg.data = data[: msg.total_len] if msg.total_len < len(data) else data
    return msg


def fast_path_setting() -> FastPathSetting:
    """NLB_SDN_FAST_PATH as a FastPathSetting (ON when unset); ValueError for any other value."""
    value = os.environ.get(FAST_PATH_ENV, "").strip().lower() or FastPathSetting.ON.value
    try:
        return FastPathSetting(value)
    except ValueError:
        raise ValueError(f"{FAST_PATH_ENV}={value!r}: expected 'on' or 'off'") from None


def _lookup(owner: Any, dotted_name: str) -> Any:
    """``owner.a.b`` for dotted_name 'a.b', or None when any part is missing."""
    for part in dotted_name.split("."):
        owner = getattr(owner, part, None)
    return owner


def _label(owner: Any, dotted_name: str) -> str:
    """The full name of ``owner.dotted_name`` for messages, e.g. os_ken.controller.controller.Datapath._recv_loop."""
    prefix = owner.__name__ if isinstance(owner, ModuleType) else f"{owner.__module__}.{owner.__qualname__}"
    return f"{prefix}.{dotted_name}"


def _relied_on(controller: ModuleType) -> list[tuple[Any, str, tuple[str, ...]]]:
    """What the fast path replaces or calls in the framework: (owner, dotted name, its parameter names)."""
    parser_args = ("datapath", "version", "msg_type", "msg_len", "xid", "buf")
    return [
        (controller, "Datapath._recv_loop", ("self",)),
        (controller, "Datapath._send_loop", ("self",)),
        (controller, "Datapath._close_write", ("self",)),
        (controller, "_deactivate", ("method",)),
        (ofproto_parser, "msg", parser_args),
        (ofproto_v1_3_parser, "OFPPacketIn.parser", parser_args),
        (ofproto_v1_3_parser, "OFPPacketIn.set_headers", ("self", "version", "msg_type", "msg_len", "xid")),
        (ofproto_v1_3_parser, "OFPPacketIn.set_buf", ("self", "buf")),
        (
            ofproto_v1_3_parser,
            "OFPPacketIn.__init__",
            ("self", "datapath", "buffer_id", "total_len", "reason", "table_id", "cookie", "match", "data"),
        ),
        (ofproto_v1_3_parser, "OFPMatch.__init__", ("self", "type_", "length", "_ordered_fields", "kwargs")),
        (ofproto_v1_3_parser, "MTInPort.__init__", ("self", "header", "value", "mask")),
        (ofp_event, "ofp_msg_to_ev", ("msg",)),
        (RyuApp, "_send_event", ("self", "ev", "state")),
        (RyuApp, "get_handlers", ("self", "ev", "state")),
        (RyuApp, "send_event_to_observers", ("self", "ev", "state")),
        (handler, "_Caller.__init__", ("self", "dispatchers", "ev_source")),
        (hub, "Queue.get", ("self", "block", "timeout")),
    ]


def _parameters(function: Callable[..., Any]) -> tuple[str, ...]:
    """The names of ``function``'s parameters, or ('?',) when it has no signature."""
    try:
        return tuple(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return ("?",)


def _internals_problems(app: Any, controller: ModuleType) -> list[str]:
    """Each internal the fast path relies on that is missing or has another shape than it expects."""
    problems = []
    for owner, dotted_name, expected in _relied_on(controller):
        function = _lookup(owner, dotted_name)
        if function is _send_loop:  # installed by an earlier call
            continue
        if function is None:
            problems.append(f"{_label(owner, dotted_name)} is missing")
        elif _parameters(function) != expected:
            problems.append(f"{_label(owner, dotted_name)}{_parameters(function)} is not ({', '.join(expected)})")
    datapath_init = _lookup(controller, "Datapath.__init__.__code__")
    assigned = set(getattr(datapath_init, "co_names", ()))
    for attribute in ("socket", "address", "state", "send_q", "_send_q_sem", "ofp_brick"):
        if attribute not in assigned:
            problems.append(f"Datapath.__init__ sets no {attribute}")
    for method in ("empty", "getting"):
        if not callable(getattr(getattr(app, "events", None), method, None)):
            problems.append(f"{type(app).__name__}.events has no {method}()")
    for name in ("sleep", "QueueEmpty"):
        if not hasattr(hub, name):
            problems.append(f"{hub.__name__}.{name} is missing")
    parsers = getattr(ofproto_v1_3_parser, "_MSG_PARSERS", None)
    if not isinstance(parsers, dict) or OFPT_PACKET_IN not in parsers:
        problems.append(f"{ofproto_v1_3_parser.__name__}._MSG_PARSERS has no packet-in parser")
    return problems


def _sample_packet_in() -> bytes:
    """An OpenFlow 1.3 packet-in as Open vSwitch sends it on a table miss, laid out by hand from the specification."""
    frame = bytes(range(60))
    match = IN_PORT_MATCH.pack(OFPMT_OXM, IN_PORT_MATCH_LEN, OXM_OF_IN_PORT, 3) + bytes(4)
    body = PACKET_IN_FIXED.pack(0xFFFFFFFF, len(frame), 0, 1, 7) + match + bytes(2) + frame
    return OFP_HEADER.pack(4, OFPT_PACKET_IN, OFP_HEADER.size + len(body), 5) + body


def _layout_problems() -> list[str]:
    """Where the framework's OpenFlow 1.3 packet-in layout, or its parse of a sample, differs from the lean parser's."""
    problems = [
        f"{ofproto_v1_3.__name__}.{name} is {getattr(ofproto_v1_3, name, 'missing')!r}, not {value!r}"
        for name, value in _LAYOUT_CONSTANTS.items()
        if getattr(ofproto_v1_3, name, None) != value
    ]
    if problems:
        return problems
    raw = _sample_packet_in()
    try:
        stock = ofproto_v1_3_parser.OFPPacketIn.parser(None, 4, OFPT_PACKET_IN, len(raw), 5, raw)
        lean = parse_packet_in(None, 4, OFPT_PACKET_IN, len(raw), 5, raw)
        same = (str(stock), stock.data, stock.match.length) == (str(lean), lean.data, lean.match.length)
    except Exception as exc:  # noqa: BLE001 - any failure on the sample means the layout is not the expected one
        return [f"parsing a sample packet-in failed: {exc!r}"]
    return [] if same else [f"the lean parser reads a sample packet-in as {lean}, the framework as {stock}"]


def fast_path_problems(app: Any) -> list[str]:
    """Why the fast path must not patch this framework for ``app``: version, internals, packet-in layout; [] if none."""
    problems = []
    if TESTED_VERSIONS.get(NAME) != VERSION:
        tested = ", ".join(f"{DISTRIBUTIONS[name]} {version}" for name, version in TESTED_VERSIONS.items())
        problems.append(f"it was tested with {tested} only")
    controller = import_framework_module("controller.controller")  # imported by the manager anyway
    return problems + _internals_problems(app, controller) + _layout_problems()


def require_fast_path_support(app: Any) -> None:
    """Raise FastPathUnsupported, naming the framework version and the way out, unless the fast path is safe here."""
    problems = fast_path_problems(app)
    if problems:
        raise FastPathUnsupported(
            f"{getattr(app, 'name', type(app).__name__)}: the packet-in fast path patches framework internals and "
            f"cannot run on {DISTRIBUTIONS[NAME]} {VERSION}: {'; '.join(problems)}. Set {FAST_PATH_ENV}="
            f"{FastPathSetting.OFF.value} to run on the framework's stock path (docs/framework.md)."
        )


def use_fast_packet_in_path(app: Any) -> bool:
    """Serve ``app``'s packet-ins on the fast path: lean datapath loops, and its handlers run without a queue hop.

    Returns False, patching nothing, when NLB_SDN_FAST_PATH is ``off``; raises FastPathUnsupported when the framework
    is not a version the fast path was tested with or its internals differ (:func:`require_fast_path_support`).

    1. Every datapath of this process reads and writes through the lean loops (:func:`_receive_loop`,
       :func:`_send_loop`): the same messages, delivered and sent in the same order, with fewer system calls; and
       OpenFlow 1.3 packet-ins are parsed by :func:`parse_packet_in`, which makes the same message objects.
    2. An EventOFPPacketIn goes straight to ``app``'s handlers for the datapath's state, in the datapath's receive
       thread, instead of through the app's event queue and thread (a queue, a semaphore and two thread switches per
       packet-in, which cost as much as the answer). Only while the app is idle, though: its queue is empty and its
       thread waits on it. Otherwise (it is still working through earlier events) the packet-in is queued behind
       them as usual, so the app sees every datapath's messages in their order either way. A handler that raises is
       logged, as the app's event loop would, and the receive thread carries on.
    3. The cyclic garbage collector looks at young objects every GC_YOUNG_THRESHOLD allocations instead of 700. A
       packet-in allocates a few dozen short-lived objects, which reference counting frees, while the app keeps
       long-lived state per connection; with the default, full collections over that state (about 0.1 s each at
       100,000 connections) took about 10 % of the CPU under load and stalled every packet-in meanwhile.

    Other apps and other events are untouched: they get the same messages through their queues.
    """
    if fast_path_setting() is FastPathSetting.OFF:
        _LOG.info("%s: packet-in fast path off (%s=%s)", app.name, FAST_PATH_ENV, FastPathSetting.OFF.value)
        return False
    require_fast_path_support(app)
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    ofproto_v1_3_parser._MSG_PARSERS[OFPT_PACKET_IN] = parse_packet_in
    controller = import_framework_module("controller.controller")
    controller.Datapath._recv_loop = controller._deactivate(_receive_loop)
    controller.Datapath._send_loop = _send_loop
    app._send_event = _direct_packet_ins(app)
    return True


def _direct_packet_ins(app: Any) -> Callable[[Any, Any], None]:
    """``app._send_event`` that runs the app's packet-in handlers at once while the app is idle (see above)."""
    queue_event = app._send_event
    packet_in = ofp_event.EventOFPPacketIn
    events = app.events

    def send_event(ev: Any, state: Any) -> None:
        """Run ``app``'s handlers for a packet-in now if the app is idle; queue any other event as before."""
        if type(ev) is not packet_in or not events.empty() or not events.getting():
            queue_event(ev, state)
            return
        for app_handler in app.get_handlers(ev, state):
            try:
                app_handler(ev)
            except Exception:  # noqa: BLE001 - as the app's event loop: log, never take the datapath down
                _LOG.exception(
                    "%s: handler %s failed on %s",
                    app.name,
                    getattr(app_handler, "__name__", app_handler),
                    type(ev).__name__,
                )

    return send_event
