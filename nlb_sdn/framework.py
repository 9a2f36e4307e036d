"""The one place that imports the Ryu API: from os_ken by default, or from ryu when selected.

Set ``NLB_SDN_FRAMEWORK=ryu`` to use an installed ryu; otherwise os_ken is used, falling back to ryu when os_ken is
missing. Every other module imports app_manager, events, decorators, ofproto and the packet library from here.
"""

from __future__ import annotations

import importlib
import os


def _choose() -> str:
    """The framework package name to import: 'os_ken' or 'ryu'."""
    wanted = os.environ.get("NLB_SDN_FRAMEWORK", "").strip().lower()
    if wanted in ("ryu", "os_ken", "os-ken", "osken"):
        return "ryu" if wanted == "ryu" else "os_ken"
    if wanted:
        raise ImportError(f"NLB_SDN_FRAMEWORK={wanted!r}: expected 'os_ken' or 'ryu'")
    try:
        importlib.import_module("os_ken")
        return "os_ken"
    except ImportError:
        return "ryu"


def apply_eventlet_fix() -> None:
    """Give eventlet back the names ryu 4.34 imports, which newer eventlet releases removed."""
    import eventlet.wsgi

    if not hasattr(eventlet.wsgi, "ALREADY_HANDLED"):
        eventlet.wsgi.ALREADY_HANDLED = object()


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
ether_types = importlib.import_module(f"{NAME}.lib.packet.ether_types")
packet = importlib.import_module(f"{NAME}.lib.packet.packet")
ethernet = importlib.import_module(f"{NAME}.lib.packet.ethernet")
arp = importlib.import_module(f"{NAME}.lib.packet.arp")
ipv4 = importlib.import_module(f"{NAME}.lib.packet.ipv4")
tcp = importlib.import_module(f"{NAME}.lib.packet.tcp")
hub = importlib.import_module(f"{NAME}.lib.hub")

RyuApp = getattr(app_manager, "OSKenApp", None) or app_manager.RyuApp
set_ev_cls = handler.set_ev_cls
CONFIG_DISPATCHER = handler.CONFIG_DISPATCHER
MAIN_DISPATCHER = handler.MAIN_DISPATCHER
DEAD_DISPATCHER = handler.DEAD_DISPATCHER


def manager_main() -> None:
    """Run the framework's manager (osken-manager or ryu-manager) with sys.argv."""
    importlib.import_module(f"{NAME}.cmd.manager").main()
