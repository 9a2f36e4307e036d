"""Every command-line program answers ``--version`` with its name and the package's version, and the repository
carries its licence."""

from __future__ import annotations

import configparser
import subprocess
import sys
from pathlib import Path

import pytest

import nlb_sdn

REPO = Path(__file__).resolve().parents[2]


def console_scripts() -> dict[str, str]:
    """setup.cfg's console scripts: name → module."""
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    lines = setup["options.entry_points"]["console_scripts"].strip().splitlines()
    return {name.strip(): target.split(":")[0].strip() for name, target in (line.split("=") for line in lines)}


@pytest.mark.parametrize(
    "name, module", sorted({**console_scripts(), "nlb-sdn-migration-receiver": "nlb_sdn.migration.receiver"}.items())
)
def test_every_program_prints_its_version(name: str, module: str) -> None:
    proc = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{name} {nlb_sdn.__version__}"


def test_the_licence_is_the_declared_one() -> None:
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    assert setup["metadata"]["license"] == "Apache-2.0"
    assert setup["metadata"]["license_files"] == "LICENSE"
    assert "Apache License" in (REPO / "LICENSE").read_text()[:300]
