"""The project's size rule for the shipped code: no class over 500 lines, no function over 80 lines.

Every ``.py`` under ``nlb_sdn/`` and ``topologies/`` is parsed with ``ast``; a class or function spans from its
first decorator to its last line, nested definitions included (and each nested one is measured on its own too).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("nlb_sdn", "topologies")
MAX_CLASS_LINES = 500
MAX_FUNCTION_LINES = 80

Definition = ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef


def span(node: Definition) -> int:
    """How many lines ``node`` takes, from its first decorator (or ``def``/``class`` line) to its last line."""
    first = min([node.lineno, *(decorator.lineno for decorator in node.decorator_list)])
    assert node.end_lineno is not None
    return node.end_lineno - first + 1


def oversized(source: str, filename: str) -> Iterator[str]:
    """One line per class over ``MAX_CLASS_LINES`` and per function over ``MAX_FUNCTION_LINES`` in ``source``."""
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.ClassDef):
            kind, limit = "class", MAX_CLASS_LINES
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            kind, limit = "function", MAX_FUNCTION_LINES
        else:
            continue
        lines = span(node)
        if lines > limit:
            yield f"{filename}:{node.lineno}: {kind} {node.name} has {lines} lines (at most {limit})"


def test_no_class_or_function_over_its_size_limit() -> None:
    paths = sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))
    assert len(paths) > 20, f"expected the project's modules under {PACKAGES}, found {len(paths)}"
    found = [
        line for path in paths for line in oversized(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    ]
    assert found == [], "over the size limit:\n" + "\n".join(found)


def _function(name: str, body_lines: int, decorators: int = 0, indent: str = "") -> str:
    """Source of a function called ``name`` with ``decorators`` decorator lines and ``body_lines`` body lines."""
    head = [f"{indent}@staticmethod"] * decorators + [f"{indent}def {name}() -> None:"]
    return "\n".join(head + [f"{indent}    x = {i}" for i in range(body_lines)]) + "\n"


def test_the_check_names_every_oversized_class_and_function() -> None:
    source = (
        _function("short", MAX_FUNCTION_LINES - 1)
        + _function("long", MAX_FUNCTION_LINES)
        + "class Big:\n"
        + "".join(_function(f"m{i}", 9, indent="    ") for i in range(MAX_CLASS_LINES // 10))
        + "class Decorated:\n"
        + _function("wrapped", MAX_FUNCTION_LINES - 1, decorators=1, indent="    ")
    )
    found = list(oversized(source, "sample.py"))
    assert len(found) == 3, found
    assert any(f"function long has {MAX_FUNCTION_LINES + 1} lines" in line for line in found), found
    assert any(f"class Big has {MAX_CLASS_LINES + 1} lines" in line for line in found), found
    assert any(f"function wrapped has {MAX_FUNCTION_LINES + 1} lines" in line for line in found), found
    assert not any("short" in line or "class Decorated" in line for line in found), found
