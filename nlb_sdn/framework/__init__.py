"""The one package that imports the Ryu API: from os_ken by default, or from ryu 4.34 when selected (docs/framework.md).

Three parts, all importable from here (``from nlb_sdn.framework import RyuApp, set_ev_cls, ...``):

* :mod:`nlb_sdn.framework.api`, the import shim: chooses the framework (``NLB_SDN_FRAMEWORK``, the running manager,
  else os_ken with ryu as the fallback) and names the modules of its API that nlb_sdn uses.
* :mod:`nlb_sdn.framework.ryu_compat`: what ryu 4.34 needs from today's eventlet and Python, and the start-up hook
  that gives a bare ``ryu-manager`` in .venv-ryu the same fix.
* :mod:`nlb_sdn.framework.options`: the manager's OpenFlow listener options (address, port, TLS), whose defaults
  the classifier takes from the config file.
* :mod:`nlb_sdn.framework.fast_path`: the opt-in packet-in fast path (the classifier uses it), guarded by the
  framework versions it was tested with; ``NLB_SDN_FAST_PATH=off`` turns it off.

``python -m nlb_sdn.framework [manager options] APP...`` runs the framework's manager (see :func:`manager_main`).
"""

from nlb_sdn.framework.api import (
    CONFIG_DISPATCHER,
    DEAD_DISPATCHER,
    FRAMEWORK_ENV,
    MAIN_DISPATCHER,
    NAME,
    VERSION,
    EventBase,
    RyuApp,
    app_manager,
    arp,
    controller_dpset,
    ether_types,
    ethernet,
    handler,
    hub,
    icmp,
    import_framework_module,
    ipv4,
    manager_main,
    nicira_ext,
    ofp_event,
    ofproto_parser,
    ofproto_v1_3,
    ofproto_v1_3_parser,
    packet,
    set_ev_cls,
    tcp,
    udp,
)
from nlb_sdn.framework.fast_path import (
    FAST_PATH_ENV,
    GC_YOUNG_THRESHOLD,
    RECEIVE_SIZE,
    TESTED_VERSIONS,
    FastPathSetting,
    FastPathUnsupported,
    fast_path_problems,
    parse_packet_in,
    require_fast_path_support,
    use_fast_packet_in_path,
)
from nlb_sdn.framework.options import ListenerOptions, set_listener_defaults
from nlb_sdn.framework.ryu_compat import ALREADY_HANDLED_STANDIN, apply_eventlet_fix

__all__ = [
    "ALREADY_HANDLED_STANDIN",
    "CONFIG_DISPATCHER",
    "DEAD_DISPATCHER",
    "FAST_PATH_ENV",
    "FRAMEWORK_ENV",
    "GC_YOUNG_THRESHOLD",
    "MAIN_DISPATCHER",
    "NAME",
    "RECEIVE_SIZE",
    "TESTED_VERSIONS",
    "VERSION",
    "EventBase",
    "FastPathSetting",
    "FastPathUnsupported",
    "ListenerOptions",
    "RyuApp",
    "app_manager",
    "apply_eventlet_fix",
    "arp",
    "controller_dpset",
    "ether_types",
    "ethernet",
    "fast_path_problems",
    "handler",
    "hub",
    "icmp",
    "import_framework_module",
    "ipv4",
    "manager_main",
    "nicira_ext",
    "ofp_event",
    "ofproto_parser",
    "ofproto_v1_3",
    "ofproto_v1_3_parser",
    "packet",
    "parse_packet_in",
    "require_fast_path_support",
    "set_ev_cls",
    "set_listener_defaults",
    "tcp",
    "udp",
    "use_fast_packet_in_path",
]
