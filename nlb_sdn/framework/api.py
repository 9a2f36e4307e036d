"""The import shim: chooses the framework (os_ken, or ryu 4.34) and imports the parts of its API that nlb_sdn uses.

The choice, in order: ``NLB_SDN_FRAMEWORK`` (``ryu``, or ``os_ken``/``os-ken``/``osken``) when set; the manager this
process runs (``ryu-manager`` means ryu, ``osken-manager`` os_ken), so a bare manager needs no variable; else os_ken,
falling back to ryu when os_ken is missing. Under ryu, :func:`apply_eventlet_fix` runs before any ryu module loads.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from collections.abc import Sequence
from importlib import metadata
from types import ModuleType

from nlb_sdn.framework.ryu_compat import EVENTLET_DEPRECATION, apply_eventlet_fix

FRAMEWORK_ENV = "NLB_SDN_FRAMEWORK"
"""The environment variable that selects the framework."""
_FRAMEWORKS = {"ryu": "ryu", "os_ken": "os_ken", "os-ken": "os_ken", "osken": "os_ken"}
MANAGERS = {"ryu-manager": "ryu", "osken-manager": "os_ken"}
"""The framework each manager program runs."""
DISTRIBUTIONS = {"os_ken": "os-ken", "ryu": "ryu"}
"""The distribution (pip) name of each framework package."""

warnings.filterwarnings("ignore", message=EVENTLET_DEPRECATION)


def _running_manager() -> str:
    """The framework whose manager program this process is ('ryu' under ryu-manager, ...), or '' for any other."""
    program = os.path.basename(sys.argv[0]) if sys.argv else ""
    return MANAGERS.get(program, "")


def _choose() -> str:
    """The framework package name to import: 'os_ken' or 'ryu'."""
    wanted = os.environ.get(FRAMEWORK_ENV, "").strip().lower()
    if wanted and wanted not in _FRAMEWORKS:
        raise ImportError(f"{FRAMEWORK_ENV}={wanted!r}: expected 'os_ken' or 'ryu'")
    manager = _running_manager()
    if wanted and manager and _FRAMEWORKS[wanted] != manager:
        raise ImportError(
            f"{FRAMEWORK_ENV}={wanted!r}, but this is {os.path.basename(sys.argv[0])}, which runs "
            f"{manager}: unset {FRAMEWORK_ENV}"
        )
    if wanted or manager:
        return _FRAMEWORKS[wanted] if wanted else manager
    try:
        importlib.import_module("os_ken")
        return "os_ken"
    except ImportError:
        return "ryu"


NAME = _choose()
"""The selected framework's package: 'os_ken' or 'ryu'."""
if NAME == "ryu":
    apply_eventlet_fix()


def import_framework_module(relative_name: str) -> ModuleType:
    """The selected framework's module ``relative_name``: 'controller.controller' is os_ken.controller.controller."""
    return importlib.import_module(f"{NAME}.{relative_name}")


app_manager = import_framework_module("base.app_manager")
event = import_framework_module("controller.event")
ofp_event = import_framework_module("controller.ofp_event")
handler = import_framework_module("controller.handler")
controller_dpset = import_framework_module("controller.dpset")
ofproto_parser = import_framework_module("ofproto.ofproto_parser")
ofproto_v1_3 = import_framework_module("ofproto.ofproto_v1_3")
ofproto_v1_3_parser = import_framework_module("ofproto.ofproto_v1_3_parser")
nicira_ext = import_framework_module("ofproto.nicira_ext")
ether_types = import_framework_module("lib.packet.ether_types")
packet = import_framework_module("lib.packet.packet")
ethernet = import_framework_module("lib.packet.ethernet")
arp = import_framework_module("lib.packet.arp")
ipv4 = import_framework_module("lib.packet.ipv4")
tcp = import_framework_module("lib.packet.tcp")
udp = import_framework_module("lib.packet.udp")
icmp = import_framework_module("lib.packet.icmp")
hub = import_framework_module("lib.hub")

RyuApp = getattr(app_manager, "OSKenApp", None) or app_manager.RyuApp
EventBase = event.EventBase
"""The base of an app's own events (the classifier's timers and REST calls post them into its queue)."""
set_ev_cls = handler.set_ev_cls
CONFIG_DISPATCHER = handler.CONFIG_DISPATCHER
MAIN_DISPATCHER = handler.MAIN_DISPATCHER
DEAD_DISPATCHER = handler.DEAD_DISPATCHER


def _distribution_version() -> str:
    """The installed version of the selected framework's distribution."""
    try:
        return metadata.version(DISTRIBUTIONS[NAME])
    except metadata.PackageNotFoundError:  # pragma: no cover - a source checkout without metadata
        return "unknown"


VERSION = _distribution_version()
"""The selected framework's version, e.g. '3.1.0' (os-ken) or '4.34' (ryu)."""


def manager_main(args: Sequence[str] | None = None) -> None:
    """Run the framework's manager (osken-manager's or ryu-manager's main) with ``args`` or sys.argv[1:].

    Accepts what the manager accepts: ``--ofp-tcp-listen-port N``, ``--ofp-listen-host H``, ``--verbose``,
    ``--config-file F``, ``--pid-file F``, then app modules as module paths (``nlb_sdn.apps.x``) or file paths.
    """
    manager = import_framework_module("cmd.manager")  # importing it monkey-patches (thread=False)
    prog = next(program for program, framework in MANAGERS.items() if framework == NAME)
    manager.main(args=list(args) if args is not None else None, prog=prog)
