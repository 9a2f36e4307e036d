"""The one place that imports the Ryu API: from os_ken by default, or from ryu when selected.

Set ``NLB_SDN_FRAMEWORK=ryu`` to use an installed ryu (4.34); ``os_ken`` (or ``os-ken``/``osken``) forces os-ken;
unset, os_ken is used, falling back to ryu when os_ken is missing. Every other module imports app_manager, events,
decorators, ofproto and the packet library from here.

ryu 4.34 is unmaintained and predates the eventlet and Python we run it with; :func:`apply_eventlet_fix` patches
what it needs and runs before any ryu module is imported. To run apps under either manager with the fix applied::

    python -m nlb_sdn.framework --ofp-tcp-listen-port 6653 nlb_sdn.apps.some_app [more apps...]

(the same arguments as ``osken-manager`` / ``ryu-manager``; ``osken-manager`` itself also works for os-ken, but a
bare ``ryu-manager`` does not: it imports ryu.app.wsgi, which fails on eventlet > 0.30.2, before it loads an app).

An app that answers packet-ins at a high rate can opt into :func:`use_fast_packet_in_path` (the classifier does): lean
datapath loops, a cheaper packet-in parser and packet-ins handled without the event-queue hop, with the same messages
and order for every app (see docs/architecture.md, "Fast path for packet-ins").
"""

from __future__ import annotations

import gc
import importlib
import logging
import os
import socket
import ssl
import struct
import sys
import warnings
from typing import Any, Optional, Sequence

_LOG = logging.getLogger("nlb_sdn.framework")
_FRAMEWORKS = {"ryu": "ryu", "os_ken": "os_ken", "os-ken": "os_ken", "osken": "os_ken"}

# eventlet >= 0.37 warns at import that it is deprecated; both os-ken and ryu run on it, so that is known noise.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")


def _choose() -> str:
    """The framework package name to import: 'os_ken' or 'ryu'."""
    wanted = os.environ.get("NLB_SDN_FRAMEWORK", "").strip().lower()
    if wanted in _FRAMEWORKS:
        return _FRAMEWORKS[wanted]
    if wanted:
        raise ImportError(f"NLB_SDN_FRAMEWORK={wanted!r}: expected 'os_ken' or 'ryu'")
    try:
        importlib.import_module("os_ken")
        return "os_ken"
    except ImportError:
        return "ryu"


# The value ryu's websocket responses return once eventlet.websocket has handled the connection. eventlet
# <= 0.30.2 compared the WSGI result against its own ALREADY_HANDLED sentinel; newer eventlet removed the sentinel
# (WebSocketWSGI now sets wsgi.WSGI_LOCAL.already_handled and returns []) and iterates whatever the app returns,
# so the stand-in has to be an empty iterable: a sentinel object() would make eventlet fail with "not iterable".
ALREADY_HANDLED_STANDIN: tuple = ()


def _ssl_wrap_socket(sock, keyfile=None, certfile=None, server_side=False, cert_reqs=None, ssl_version=None,
                     ca_certs=None, do_handshake_on_connect=True, suppress_ragged_eofs=True, ciphers=None):
    """ssl.wrap_socket (removed in Python 3.12) on top of SSLContext, for ryu.lib.hub's TLS paths."""
    import ssl

    if ssl_version is None:
        ssl_version = ssl.PROTOCOL_TLS_SERVER if server_side else ssl.PROTOCOL_TLS_CLIENT
    context = ssl.SSLContext(ssl_version)
    if ssl_version == ssl.PROTOCOL_TLS_CLIENT:
        context.check_hostname = False  # the old function never checked host names
    context.verify_mode = ssl.CERT_NONE if cert_reqs is None else cert_reqs
    if ca_certs:
        context.load_verify_locations(ca_certs)
    if certfile:
        context.load_cert_chain(certfile, keyfile)
    if ciphers:
        context.set_ciphers(ciphers)
    return context.wrap_socket(sock, server_side=server_side, do_handshake_on_connect=do_handshake_on_connect,
                               suppress_ragged_eofs=suppress_ragged_eofs)


def apply_eventlet_fix() -> list[str]:
    """Patch eventlet and the standard library so that ryu 4.34 imports and runs; return what was patched.

    Idempotent, and harmless under os-ken (which needs none of it). Must run before ryu is imported:
    ``ryu.app.wsgi`` (imported by ``ryu.cmd.manager``) reads ``eventlet.wsgi.ALREADY_HANDLED`` in a class body.

    * ``eventlet.wsgi.ALREADY_HANDLED``: removed in eventlet 0.30.3; ryu.app.wsgi imports it. Restored as an
      empty tuple, which is what eventlet >= 0.30.3 expects a handled websocket response to return.
    * ``ssl.wrap_socket``: removed in Python 3.12; ryu.lib.hub uses it for TLS (OpenFlow over SSL). Only added
      when missing, so on Python 3.11 nothing changes.
    * ``collections.Callable`` and the other ABC aliases removed in Python 3.10: ryu 4.34's own code does not use
      them, but old ryu apps and libraries written against it do; added only where missing.

    What needs no patch with eventlet 0.41.3 + dnspython >= 2: eventlet.green (ryu uses only eventlet.semaphore,
    eventlet.websocket, eventlet.wsgi.server, which all still exist), and ryu.lib.hub.WSGIServer/StreamServer.
    """
    patched: list[str] = []

    import eventlet.wsgi

    if not hasattr(eventlet.wsgi, "ALREADY_HANDLED"):
        eventlet.wsgi.ALREADY_HANDLED = ALREADY_HANDLED_STANDIN
        patched.append("eventlet.wsgi.ALREADY_HANDLED")

    import ssl

    if not hasattr(ssl, "wrap_socket"):
        ssl.wrap_socket = _ssl_wrap_socket
        patched.append("ssl.wrap_socket")

    import collections
    import collections.abc

    for name in ("Callable", "Mapping", "MutableMapping", "Sequence", "MutableSequence", "Iterable", "Iterator",
                 "Set", "MutableSet", "Hashable", "Sized", "Container", "Generator"):
        if not hasattr(collections, name):
            setattr(collections, name, getattr(collections.abc, name))
            patched.append(f"collections.{name}")
    return patched


NAME = _choose()
if NAME == "ryu":
    apply_eventlet_fix()

_base = importlib.import_module(NAME)
app_manager = importlib.import_module(f"{NAME}.base.app_manager")
ofp_event = importlib.import_module(f"{NAME}.controller.ofp_event")
handler = importlib.import_module(f"{NAME}.controller.handler")
controller_dpset = importlib.import_module(f"{NAME}.controller.dpset")
ofproto_v1_3 = importlib.import_module(f"{NAME}.ofproto.ofproto_v1_3")
ofproto_v1_3_parser = importlib.import_module(f"{NAME}.ofproto.ofproto_v1_3_parser")
nicira_ext = importlib.import_module(f"{NAME}.ofproto.nicira_ext")
ether_types = importlib.import_module(f"{NAME}.lib.packet.ether_types")
packet = importlib.import_module(f"{NAME}.lib.packet.packet")
ethernet = importlib.import_module(f"{NAME}.lib.packet.ethernet")
arp = importlib.import_module(f"{NAME}.lib.packet.arp")
ipv4 = importlib.import_module(f"{NAME}.lib.packet.ipv4")
tcp = importlib.import_module(f"{NAME}.lib.packet.tcp")
udp = importlib.import_module(f"{NAME}.lib.packet.udp")
icmp = importlib.import_module(f"{NAME}.lib.packet.icmp")
hub = importlib.import_module(f"{NAME}.lib.hub")

RyuApp = getattr(app_manager, "OSKenApp", None) or app_manager.RyuApp
set_ev_cls = handler.set_ev_cls
CONFIG_DISPATCHER = handler.CONFIG_DISPATCHER
MAIN_DISPATCHER = handler.MAIN_DISPATCHER
DEAD_DISPATCHER = handler.DEAD_DISPATCHER


ofproto_parser = importlib.import_module(f"{NAME}.ofproto.ofproto_parser")

GC_YOUNG_THRESHOLD = 10_000
"""Allocations between collections of the youngest generation on the fast path (Python's default is 700)."""
RECEIVE_SIZE = 65536
"""Bytes the lean receive loop asks the socket for at a time (the framework's own loop asks for one header)."""
_OFP_HEADER = struct.Struct(ofproto_v1_3.OFP_HEADER_PACK_STR)


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
        except (socket.timeout, ssl.SSLError):
            continue
        except (EOFError, IOError):
            break
        if not data:
            break
        buf += data
        offset, size = 0, len(buf)
        while size - offset >= _OFP_HEADER.size:
            version, msg_type, msg_len, xid = _OFP_HEADER.unpack_from(buf, offset)
            msg_len = max(msg_len, _OFP_HEADER.size)  # as the framework: a bad length skips one header
            if size - offset < msg_len:
                break
            msg = ofproto_parser.msg(datapath, version, msg_type, msg_len, xid, buf[offset:offset + msg_len])
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
    except socket.timeout:
        _LOG.debug("socket timed out while sending to the switch at %s", datapath.address)
    except IOError as exc:
        _LOG.debug("socket error while sending to the switch at %s: [%s] %s", datapath.address, exc.errno,
                   exc.strerror)
    finally:
        queue = datapath.send_q
        datapath.send_q = None
        try:
            while queue.get(block=False):
                datapath._send_q_sem.release()
        except hub.QueueEmpty:
            pass
        datapath._close_write()


_PACKET_IN_FIXED = struct.Struct("!" + ofproto_v1_3.OFP_PACKET_IN_PACK_STR[1:])  # after the header
_IN_PORT_MATCH = struct.Struct("!HHII")  # ofp_match type and length, one OXM header and its 32-bit value
_PACKET_IN_MATCH_AT = ofproto_v1_3.OFP_PACKET_IN_SIZE - ofproto_v1_3.OFP_MATCH_SIZE
_IN_PORT_MATCH_LEN = 12  # type, length and the in_port OXM: 4 bytes of padding follow
_PACKET_IN_DATA_AT = _PACKET_IN_MATCH_AT + 16 + 2  # the match padded to 8 bytes, then 2 bytes of padding
_FRAMEWORK_PACKET_IN_PARSER = ofproto_v1_3_parser._MSG_PARSERS[ofproto_v1_3.OFPT_PACKET_IN]


def parse_packet_in(datapath: Any, version: int, msg_type: int, msg_len: int, xid: int, buf: Any) -> Any:
    """``OFPPacketIn.parser``, cheaper for what Open vSwitch sends on a table miss: a match of in_port alone.

    The message is the framework's OFPPacketIn with the same fields (its match has the same OXM fields, length and
    legacy ``fields`` list); the generic match parser, which costs half of a packet-in's parsing, is skipped. Any
    other match (metadata, tunnel fields, ...) goes to the framework's parser.
    """
    if len(buf) < _PACKET_IN_DATA_AT:
        return _FRAMEWORK_PACKET_IN_PARSER(datapath, version, msg_type, msg_len, xid, buf)
    match_type, match_len, oxm_header, in_port = _IN_PORT_MATCH.unpack_from(buf, _PACKET_IN_MATCH_AT)
    if (match_type, match_len, oxm_header) != (ofproto_v1_3.OFPMT_OXM, _IN_PORT_MATCH_LEN,
                                               ofproto_v1_3.OXM_OF_IN_PORT):
        return _FRAMEWORK_PACKET_IN_PARSER(datapath, version, msg_type, msg_len, xid, buf)
    msg = ofproto_v1_3_parser.OFPPacketIn(datapath)
    msg.set_headers(version, msg_type, msg_len, xid)
    msg.set_buf(buf)
    msg.buffer_id, msg.total_len, msg.reason, msg.table_id, msg.cookie = _PACKET_IN_FIXED.unpack_from(
        msg.buf, ofproto_v1_3.OFP_HEADER_SIZE)
    match = ofproto_v1_3_parser.OFPMatch(_ordered_fields=[("in_port", in_port)])
    match.length = match_len
    in_port_field = ofproto_v1_3_parser.MTInPort(oxm_header, in_port)
    in_port_field.length = _IN_PORT_MATCH_LEN - 4
    match.fields.append(in_port_field)
    msg.match = match
    data = msg.buf[_PACKET_IN_DATA_AT:]
    msg.data = data[:msg.total_len] if msg.total_len < len(data) else data
    return msg


def use_fast_packet_in_path(app: Any) -> None:
    """Serve ``app``'s packet-ins on the fast path: lean datapath loops, and its handlers run without a queue hop.

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

    Other apps and other events are untouched: they get the same messages through their queues. Works on os-ken and
    on ryu 4.34 (the same Datapath loops and ``RyuApp._send_event``; the queues are eventlet's).
    """
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    ofproto_v1_3_parser._MSG_PARSERS[ofproto_v1_3.OFPT_PACKET_IN] = parse_packet_in
    controller = importlib.import_module(f"{NAME}.controller.controller")  # imported by the manager anyway
    controller.Datapath._recv_loop = controller._deactivate(_receive_loop)
    controller.Datapath._send_loop = _send_loop
    queue_event = app._send_event
    packet_in = ofp_event.EventOFPPacketIn
    events = app.events

    def send_event(ev: Any, state: Any) -> None:
        if type(ev) is not packet_in or not events.empty() or not events.getting():
            queue_event(ev, state)
            return
        for app_handler in app.get_handlers(ev, state):
            try:
                app_handler(ev)
            except Exception:  # noqa: BLE001 - as the app's event loop: log, never take the datapath down
                _LOG.exception("%s: handler %s failed on %s", app.name,
                               getattr(app_handler, "__name__", app_handler), type(ev).__name__)

    app._send_event = send_event


def _distribution_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("os-ken" if NAME == "os_ken" else "ryu")
    except metadata.PackageNotFoundError:  # pragma: no cover - a source checkout without metadata
        return "unknown"


VERSION = _distribution_version()
"""The selected framework's version, e.g. '3.1.0' (os-ken) or '4.34' (ryu)."""


def manager_main(args: Optional[Sequence[str]] = None) -> None:
    """Run the framework's manager (osken-manager's or ryu-manager's main) with ``args`` or sys.argv[1:].

    Accepts what the manager accepts: ``--ofp-tcp-listen-port N``, ``--ofp-listen-host H``, ``--verbose``,
    ``--config-file F``, ``--pid-file F``, then app modules as module paths (``nlb_sdn.apps.x``) or file paths.
    """
    if NAME == "ryu":
        apply_eventlet_fix()
    manager = importlib.import_module(f"{NAME}.cmd.manager")  # importing it monkey-patches (thread=False)
    prog = "osken-manager" if NAME == "os_ken" else "ryu-manager"
    manager.main(args=list(args) if args is not None else None, prog=prog)


if __name__ == "__main__":  # python -m nlb_sdn.framework [manager options] APP...
    # Run the imported module's manager_main, not this __main__ copy's, so that there is one nlb_sdn.framework.
    importlib.import_module("nlb_sdn.framework").manager_main(sys.argv[1:])
