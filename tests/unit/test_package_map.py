"""The package map holds: which package may import which, and which module alone owns a layout."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from nlb_sdn.dam.atoms import ROUTE_PREFIX, SESSION_PREFIX

REPO = Path(__file__).resolve().parents[2]
SOURCE_TREES = ("nlb_sdn", "benchmarks", "tests")
DAM_KEY_OWNERS = {"nlb_sdn/dam/atoms.py", "tests/unit/test_dam_contract.py"}
"""The module that owns the DAM key layouts, and its tests."""
RAW_DAM_KEY = re.compile(r"""["'](conn|sess)[:"']""")
"""A string literal (f-strings too) that is, or starts with, a DAM key prefix."""


def loaded_after_import(module: str) -> list[str]:
    """The ``nlb_sdn`` modules a fresh interpreter has loaded after importing ``module``."""
    code = (
        f"import json, sys; import {module}; "
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('nlb_sdn'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60, check=True
    )
    return json.loads(result.stdout)


def test_config_does_not_import_the_router() -> None:
    loaded = loaded_after_import("nlb_sdn.config")
    assert "nlb_sdn.config.routing" in loaded
    assert not [name for name in loaded if name == "nlb_sdn.router" or name.startswith("nlb_sdn.router.")], loaded


def raw_dam_keys(relative: str) -> list[str]:
    """``path:line: text`` of each line of a source file that spells a DAM key prefix in a string literal."""
    lines = (REPO / relative).read_text().splitlines()
    return [f"{relative}:{number}: {line.strip()}" for number, line in enumerate(lines, 1) if RAW_DAM_KEY.search(line)]


def test_raw_dam_key_pattern_finds_literals_and_f_strings_only() -> None:
    session, route = SESSION_PREFIX, ROUTE_PREFIX
    spelled = [f'key = "{session}app:x"', f"key = f'{route}tcp:{{ip}}'", f'kind = "{session[:-1]}"', f'scan("{route}")']
    assert all(RAW_DAM_KEY.search(line) for line in spelled)
    assert not any(
        RAW_DAM_KEY.search(line)
        for line in [
            f'"""``{session}<type>:<id>`` atoms"""',
            "async def _serve(self, conn: socket.socket)",
            'session_key("app", "x")',
            '"connection"',
        ]
    )


def test_only_dam_atoms_spells_dam_keys() -> None:
    files = sorted(str(path.relative_to(REPO)) for tree in SOURCE_TREES for path in (REPO / tree).rglob("*.py"))
    assert "nlb_sdn/dam/atoms.py" in files
    found = [hit for relative in files if relative not in DAM_KEY_OWNERS for hit in raw_dam_keys(relative)]
    assert found == [], "use nlb_sdn.dam.atoms (route_key, session_key, ROUTE_PREFIX, ...):\n" + "\n".join(found)
