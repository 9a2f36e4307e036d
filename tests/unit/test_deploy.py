"""Deployment files: the images (``Dockerfile``) and the systemd units (``deploy/systemd``) name commands our
programs accept, run unprivileged where they can, expose the default ports and carry health checks; the units pass
``systemd-analyze verify``; the health check tells an open port from a closed one."""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from nlb_sdn import healthcheck
from nlb_sdn.agent.cli import build_parser as agent_parser
from nlb_sdn.cli import build_parser as controller_parser
from nlb_sdn.config.openflow import DEFAULT_OPENFLOW_PORT
from nlb_sdn.config.rest import Rest
from nlb_sdn.router.cli import build_parser as router_parser

REPO = Path(__file__).resolve().parents[2]
UNITS = sorted((REPO / "deploy" / "systemd").glob("*.service"))
PARSERS = {"nlb-sdn": controller_parser, "nlb-sdn-agent": agent_parser, "nlb-sdn-router": router_parser}


def parse_command(argv: list[str]) -> argparse.Namespace:
    """Parse a deployment file's command line with the named program's own parser (SystemExit if it refuses)."""
    program = Path(argv[0]).name
    if program == "python":
        assert argv[1:3] == ["-m", "nlb_sdn.healthcheck"]
        return argparse.Namespace(program=program)
    return PARSERS[program]().parse_args(argv[1:])


def dockerfile_stages() -> dict[str, dict[str, list[str]]]:
    """The Dockerfile's stages: name → instruction → its arguments (continuation lines joined)."""
    text = re.sub(r"\\\n\s*", " ", (REPO / "Dockerfile").read_text())
    stages: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        instruction, _, rest = line.strip().partition(" ")
        if instruction == "FROM":
            current = stages.setdefault(rest.split(" AS ")[-1].strip(), {})
        current.setdefault(instruction, []).append(rest.strip())
    return stages


def exec_form(value: str) -> list[str]:
    """An instruction's JSON exec form, e.g. ENTRYPOINT's."""
    argv = json.loads(value)
    assert isinstance(argv, list) and all(isinstance(arg, str) for arg in argv)
    return argv


@pytest.mark.parametrize("target, user, ports", [
    ("controller", "nlb", {f"{DEFAULT_OPENFLOW_PORT}/tcp", f"{Rest().port}/tcp", "9100/udp"}),
    ("agent", "root", {"9101/udp", "7001/tcp"}),
    ("router", "root", {"9180/tcp"}),
])  # fmt: skip
def test_each_image_has_its_user_ports_health_check_and_a_valid_entrypoint(
    target: str, user: str, ports: set[str]
) -> None:
    stage = dockerfile_stages()[target]
    assert stage["USER"] == [user]
    assert ports <= set(" ".join(stage["EXPOSE"]).split())
    (health,) = stage["HEALTHCHECK"]
    options, _, command = health.partition("CMD ")
    assert "--interval=" in options and "--timeout=" in options
    parse_command(exec_form(command))
    (entrypoint,) = stage["ENTRYPOINT"]
    parse_command(exec_form(entrypoint) + (["--controller", "http://127.0.0.1:8080"] if target == "router" else []))


def test_the_images_share_one_base_that_creates_the_unprivileged_user() -> None:
    stages = dockerfile_stages()
    assert {"base", "controller", "agent", "router"} <= set(stages)
    assert any("useradd --system" in run for run in stages["base"]["RUN"])
    for target in ("controller", "agent", "router"):
        assert stages[target]["FROM"] == ["base AS " + target]


def unit_commands(unit: Path) -> list[list[str]]:
    """The ExecStart and ExecStartPre command lines of a unit, environment references dropped."""
    commands = []
    for line in unit.read_text().splitlines():
        key, _, value = line.partition("=")
        if key in ("ExecStart", "ExecStartPre"):
            commands.append([arg for arg in shlex.split(value) if not arg.startswith("$")])
    return commands


@pytest.mark.parametrize("unit", UNITS, ids=[unit.name for unit in UNITS])
def test_each_unit_runs_a_command_its_program_accepts_as_a_non_root_user(unit: Path) -> None:
    commands = unit_commands(unit)
    assert commands and all(argv[0].startswith("/usr/local/bin/") for argv in commands)
    for argv in commands:
        parse_command(argv)
    text = unit.read_text()
    assert "User=nlb" in text and "NoNewPrivileges=yes" in text and "Restart=on-failure" in text


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("unit", UNITS, ids=[unit.name for unit in UNITS])
def test_each_unit_passes_systemd_analyze_verify(unit: Path, tmp_path: Path) -> None:
    bin_dir = Path(sys.executable).parent
    for program in PARSERS:
        if not (bin_dir / program).exists():
            pytest.skip(f"{program} is not installed beside {sys.executable}")
    copy = tmp_path / unit.name
    copy.write_text(unit.read_text().replace("/usr/local/bin/", f"{bin_dir}/"))
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", str(copy)], capture_output=True, text=True)
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr


def test_the_health_check_tells_an_open_port_from_a_closed_one() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        assert healthcheck.main(["tcp", f"127.0.0.1:{port}"]) == 0
    assert healthcheck.main(["tcp", f"127.0.0.1:{port}", "--timeout", "1"]) == 1
    with pytest.raises(SystemExit):
        healthcheck.main(["tcp", "no-port"])


def test_the_controller_unit_reloads_its_config_by_sighup() -> None:
    text = (REPO / "deploy" / "systemd" / "nlb-sdn-controller.service").read_text()
    assert "ExecReload=/bin/kill -HUP $MAINPID" in text.splitlines()
