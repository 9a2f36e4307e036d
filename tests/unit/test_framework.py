"""nlb_sdn.framework: exports under os-ken, selection by NLB_SDN_FRAMEWORK, and the ryu 4.34 compatibility fix."""

from __future__ import annotations

import ast
import collections
import collections.abc
import importlib.util
import os
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from nlb_sdn import framework
from nlb_sdn.framework import ryu_compat

ROOT = Path(__file__).resolve().parents[2]
RYU_PYTHON = ROOT / ".venv-ryu" / "bin" / "python"

EXPORTS = (
    "app_manager",
    "ofp_event",
    "handler",
    "ofproto_v1_3",
    "ofproto_v1_3_parser",
    "packet",
    "ethernet",
    "arp",
    "ipv4",
    "tcp",
    "udp",
    "icmp",
    "ether_types",
    "hub",
    "RyuApp",
    "set_ev_cls",
    "CONFIG_DISPATCHER",
    "MAIN_DISPATCHER",
    "DEAD_DISPATCHER",
    "manager_main",
    "NAME",
    "VERSION",
    "apply_eventlet_fix",
)

on_os_ken = pytest.mark.skipif(framework.NAME != "os_ken", reason="runs under os-ken (the main venv)")


def run_python(code: str, framework_env: str | None, python: str | Path = sys.executable, *args: str):
    env = {k: v for k, v in os.environ.items() if k != "NLB_SDN_FRAMEWORK"}
    if framework_env is not None:
        env["NLB_SDN_FRAMEWORK"] = framework_env
    return subprocess.run(
        [str(python), *(("-c", code) if code else ()), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_every_export_is_present():
    missing = [name for name in EXPORTS if not hasattr(framework, name)]
    assert missing == []


def test_every_name_the_repository_imports_from_the_package_is_exported():
    imported = {
        (str(path.relative_to(ROOT)), alias.name)
        for folder in ("nlb_sdn", "tests", "benchmarks")
        for path in (ROOT / folder).rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.ImportFrom) and node.module == "nlb_sdn.framework"
        for alias in node.names
    }
    assert {name for _, name in imported} >= {"RyuApp", "ofproto_v1_3", "use_fast_packet_in_path"}
    assert [(path, name) for path, name in sorted(imported) if not hasattr(framework, name)] == []


@on_os_ken
def test_os_ken_exports_are_the_os_ken_api():
    import os_ken.base.app_manager
    import os_ken.controller.handler

    assert framework.NAME == "os_ken"
    assert framework.VERSION == "3.1.0"
    assert framework.RyuApp is os_ken.base.app_manager.OSKenApp
    assert framework.set_ev_cls is os_ken.controller.handler.set_ev_cls
    assert framework.app_manager.__name__ == "os_ken.base.app_manager"
    assert framework.hub.__name__ == "os_ken.lib.hub"
    assert (framework.CONFIG_DISPATCHER, framework.MAIN_DISPATCHER, framework.DEAD_DISPATCHER) == (
        "config",
        "main",
        "dead",
    )
    assert framework.ofproto_v1_3.OFP_VERSION == 4
    for event in (
        "EventOFPSwitchFeatures",
        "EventOFPPacketIn",
        "EventOFPFlowRemoved",
        "EventOFPPortStatus",
        "EventOFPFlowStatsReply",
        "EventOFPStateChange",
        "EventOFPErrorMsg",
    ):
        assert hasattr(framework.ofp_event, event), event
    assert hasattr(framework.hub, "WSGIServer") and hasattr(framework.hub, "spawn")


def test_packet_library_round_trip():
    pkt = framework.packet.Packet()
    pkt.add_protocol(
        framework.ethernet.ethernet(
            dst="00:00:00:00:00:02", src="00:00:00:00:00:01", ethertype=framework.ether_types.ETH_TYPE_IP
        )
    )
    pkt.add_protocol(framework.ipv4.ipv4(src="10.0.0.1", dst="10.0.0.100", proto=6))
    pkt.add_protocol(framework.tcp.tcp(src_port=40000, dst_port=80, bits=framework.tcp.TCP_SYN))
    pkt.serialize()
    parsed = framework.packet.Packet(bytes(pkt.data))
    assert parsed.get_protocol(framework.ethernet.ethernet).src == "00:00:00:00:00:01"
    assert parsed.get_protocol(framework.ipv4.ipv4).dst == "10.0.0.100"
    assert parsed.get_protocol(framework.tcp.tcp).dst_port == 80


def test_smoke_app_installs_table_miss_flow_on_switch_features():
    spec = importlib.util.spec_from_file_location("ryu_smoke_app", ROOT / "tests" / "ryu_smoke_app.py")
    ryu_smoke_app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ryu_smoke_app)
    sent = []

    class FakeDatapath:
        id = 0x1
        ofproto = framework.ofproto_v1_3
        ofproto_parser = framework.ofproto_v1_3_parser

        def send_msg(self, msg):
            sent.append(msg)

    class FakeEvent:
        class msg:
            datapath = FakeDatapath()

    app = ryu_smoke_app.SmokeApp()
    assert issubclass(ryu_smoke_app.SmokeApp, framework.RyuApp)
    app.switch_features(FakeEvent())
    [mod] = sent
    assert isinstance(mod, framework.ofproto_v1_3_parser.OFPFlowMod)
    assert (mod.priority, mod.cookie) == (0, ryu_smoke_app.SMOKE_COOKIE)
    [action] = mod.instructions[0].actions
    assert action.port == framework.ofproto_v1_3.OFPP_CONTROLLER


def test_bogus_framework_name_is_an_import_error():
    result = run_python("import nlb_sdn.framework", "bogus")
    assert result.returncode != 0
    assert "ImportError: NLB_SDN_FRAMEWORK='bogus': expected 'os_ken' or 'ryu'" in result.stderr


@on_os_ken
@pytest.mark.parametrize("value", ["os_ken", "os-ken", "OSKEN", ""])
def test_os_ken_selected_by_env_or_default(value):
    result = run_python("from nlb_sdn import framework; print(framework.NAME, framework.RyuApp.__module__)", value)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["os_ken", "os_ken.base.app_manager"]


def test_ryu_selected_by_env_fails_cleanly_without_ryu():
    result = run_python("import importlib.util, sys; sys.exit(0 if importlib.util.find_spec('ryu') else 3)", None)
    if result.returncode == 0:
        pytest.skip("ryu is installed in this venv")
    result = run_python("import nlb_sdn.framework", "ryu")
    assert result.returncode != 0
    assert "No module named 'ryu'" in result.stderr


def run_as_program(tmp_path: Path, program: str, framework_env: str | None):
    """Import nlb_sdn.framework in a script called ``program`` (as a manager's console script is) and print NAME."""
    script = tmp_path / program
    script.write_text(
        f"import sys\nsys.path.insert(0, {str(ROOT)!r})\nfrom nlb_sdn import framework\nprint(framework.NAME)\n"
    )
    return run_python("", framework_env, sys.executable, str(script))


@on_os_ken
def test_the_running_manager_chooses_the_framework(tmp_path):
    assert run_as_program(tmp_path, "osken-manager", None).stdout.split() == ["os_ken"]
    assert run_as_program(tmp_path, "some-tool", None).stdout.split() == ["os_ken"]
    under_ryu_manager = run_as_program(tmp_path, "ryu-manager", None)  # this venv has no ryu: proves it chose ryu
    assert "No module named 'ryu'" in under_ryu_manager.stderr


def test_a_framework_env_that_contradicts_the_manager_is_an_import_error(tmp_path):
    result = run_as_program(tmp_path, "ryu-manager", "os_ken")
    assert result.returncode != 0
    assert (
        "ImportError: NLB_SDN_FRAMEWORK='os_ken', but this is ryu-manager, which runs ryu: unset NLB_SDN_FRAMEWORK"
    ) in result.stderr


@on_os_ken
def test_manager_main_runs_osken_manager():
    result = run_python("", "os_ken", sys.executable, "-m", "nlb_sdn.framework", "--version")
    assert result.returncode == 0, result.stderr
    assert "osken-manager 3.1.0" in result.stdout + result.stderr


def test_apply_eventlet_fix_adds_already_handled(monkeypatch):
    import eventlet.wsgi

    monkeypatch.delattr(eventlet.wsgi, "ALREADY_HANDLED", raising=False)
    assert "eventlet.wsgi.ALREADY_HANDLED" in framework.apply_eventlet_fix()
    # eventlet > 0.30.2 iterates what a handled websocket response returns: the stand-in must be empty and iterable
    assert list(eventlet.wsgi.ALREADY_HANDLED) == []
    from eventlet.wsgi import ALREADY_HANDLED  # the import ryu.app.wsgi does

    assert ALREADY_HANDLED is framework.ALREADY_HANDLED_STANDIN
    assert "eventlet.wsgi.ALREADY_HANDLED" not in framework.apply_eventlet_fix()  # idempotent


def test_apply_eventlet_fix_keeps_an_existing_already_handled(monkeypatch):
    import eventlet.wsgi

    sentinel = object()
    monkeypatch.setattr(eventlet.wsgi, "ALREADY_HANDLED", sentinel, raising=False)
    framework.apply_eventlet_fix()
    assert eventlet.wsgi.ALREADY_HANDLED is sentinel


def test_apply_eventlet_fix_restores_collections_aliases():
    had = hasattr(collections, "Callable")
    saved = getattr(collections, "Callable", None)
    try:
        if had:
            delattr(collections, "Callable")
        assert "collections.Callable" in framework.apply_eventlet_fix()
        assert collections.Callable is collections.abc.Callable
        assert collections.MutableMapping is collections.abc.MutableMapping
    finally:
        if had:
            collections.Callable = saved
        elif hasattr(collections, "Callable"):
            delattr(collections, "Callable")


def test_apply_eventlet_fix_adds_ssl_wrap_socket_only_when_missing(monkeypatch):
    original = getattr(ssl, "wrap_socket", None)
    framework.apply_eventlet_fix()
    assert getattr(ssl, "wrap_socket", None) in (original, ryu_compat._ssl_wrap_socket)
    if original is not None:
        assert ssl.wrap_socket is original  # Python < 3.12: untouched

    monkeypatch.delattr(ssl, "wrap_socket", raising=False)
    assert "ssl.wrap_socket" in framework.apply_eventlet_fix()
    left, right = socket.socketpair()
    with left, right:
        wrapped = ssl.wrap_socket(left, do_handshake_on_connect=False)
        assert isinstance(wrapped, ssl.SSLSocket)
        wrapped.close()


@pytest.mark.ryu
@pytest.mark.skipif(not RYU_PYTHON.exists(), reason="no .venv-ryu (scripts/ryu-venv.sh creates it)")
def test_ryu_venv_imports_ryu_through_framework():
    code = (
        "from nlb_sdn import framework as f\n"
        "import ryu.app.wsgi, ryu.cmd.manager\n"
        "assert ryu.app.wsgi._AlreadyHandledResponse()({}, None) == ()\n"
        "print(f.NAME, f.VERSION, f.RyuApp.__module__, f.hub.__name__)\n"
    )
    result = run_python(code, "ryu", RYU_PYTHON)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ryu", "4.34", "ryu.base.app_manager", "ryu.lib.hub"]
    result = run_python("", "ryu", RYU_PYTHON, "-m", "nlb_sdn.framework", "--version")
    assert result.returncode == 0, result.stderr
    assert "ryu-manager 4.34" in result.stdout + result.stderr
