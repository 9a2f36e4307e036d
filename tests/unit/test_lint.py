"""The tree is lint-clean: ruff finds nothing, and mypy passes its configured targets (pyproject.toml).

Each check runs the tool of the interpreter's own environment (the `lint` extra pins them) and is skipped, saying
why, where that tool is not installed.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 300.0
"""Seconds a tool may take (a cold mypy run takes about 15 s here)."""


def run_tool(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m <module> <args>`` in the repository root, or a skip when the tool is not installed."""
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (pip install -e '.[lint]')")
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )


def assert_clean(result: subprocess.CompletedProcess[str]) -> None:
    """Fail with the tool's own report when it found anything."""
    assert result.returncode == 0, f"{' '.join(map(str, result.args[2:]))} found:\n{result.stdout}{result.stderr}"


def test_ruff_check_finds_nothing() -> None:
    assert_clean(run_tool("ruff", "check", "--output-format", "concise", "."))


def test_mypy_passes_its_targets() -> None:
    assert_clean(run_tool("mypy"))


def test_ruff_format_leaves_the_tree_as_it_is() -> None:
    assert_clean(run_tool("ruff", "format", "--check", "."))
