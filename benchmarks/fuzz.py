"""Fuzz run: every property of ``tests/unit/test_properties_*.py`` with the ``bench`` profile (100,000 examples each).

Run from the repository root (no root, no Mininet)::

    .venv/bin/python benchmarks/fuzz.py [--examples N] [--only NAME] [--out benchmarks/results/fuzz.json]

A full run takes a few hours on 2 cores; ``--examples 10000 --only parse`` is a quick one.

CI runs the same properties with 2,000 examples each (the ``ci`` profile of ``tests/lib/properties.py``). Here each
property runs in turn; the JSON report gives, per property, the examples it ran, its seconds, and its failure (the
exception hypothesis raised after shrinking, with the smallest failing example in its message) or null. A property
that pytest marks ``xfail`` (a known bug being fixed elsewhere) is reported with ``known_failure`` and its reason.
The exit status is 1 when a property that is not a known failure failed.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python benchmarks/fuzz.py` from anywhere
    sys.path.insert(0, str(REPO))

DEFAULT_OUT = REPO / "benchmarks" / "results" / "fuzz.json"
MODULES = sorted(path.stem for path in (REPO / "tests" / "unit").glob("test_properties_*.py"))


def properties(only: list[str]) -> list[tuple[str, Any]]:
    """Every hypothesis test of the property modules (``module.function``), those matching ``only`` if given."""
    found = []
    for module_name in MODULES:
        module = importlib.import_module(f"tests.unit.{module_name}")
        for name, test in vars(module).items():
            qualified = f"{module_name}.{name}"
            if (
                name.startswith("test_")
                and hasattr(test, "hypothesis")
                and (not only or any(o in qualified for o in only))
            ):
                found.append((qualified, test))
    return found


def known_failure(test: Any) -> str | None:
    """The reason of the test's ``xfail`` mark, if it has one."""
    for mark in getattr(test, "pytestmark", []):
        if mark.name == "xfail":
            return str(mark.kwargs.get("reason", "xfail"))
    return None


def counting(inner: Callable[..., Any], counter: list[int]) -> Callable[..., Any]:
    """``inner``, counting its calls in ``counter[0]``."""

    def run(*args: Any, **kwargs: Any) -> Any:
        counter[0] += 1
        return inner(*args, **kwargs)

    return run


def run_property(test: Any) -> dict[str, Any]:
    """Run one property to its profile's example count: examples run, seconds, failure or None."""
    counter = [0]
    test.hypothesis.inner_test = counting(test.hypothesis.inner_test, counter)
    started = time.monotonic()
    failure = None
    try:
        test()
    except Exception as exc:  # noqa: BLE001 - a failing property is a finding to report, not a crash of the run
        text = "".join(traceback.format_exception_only(exc)).strip()
        failure = text if len(text) <= 4000 else f"{text[:3000]} [...] {text[-1000:]}"
    return {"examples": counter[0], "seconds": round(time.monotonic() - started, 1), "failure": failure}


def main(argv: list[str] | None = None) -> int:
    """Run the properties, print and write the JSON report; 1 when an unexpected failure was found."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=None, help="examples per property (default 100,000)")
    parser.add_argument("--only", action="append", default=[], help="only properties whose name contains this")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    # Both are read when tests.lib.properties is first imported, just below.
    os.environ["NLB_FUZZ_PROFILE"] = "bench"
    if args.examples is not None:
        os.environ["NLB_FUZZ_EXAMPLES"] = str(args.examples)
    from tests.lib.properties import EXAMPLES

    report: dict[str, Any] = {"profile": "bench", "max_examples": EXAMPLES, "properties": {}}
    for name, test in properties(args.only):
        result = run_property(test)
        reason = known_failure(test)
        result["known_failure"] = reason if result["failure"] else None
        report["properties"][name] = result
        print(f"{name}: {result['examples']} examples, {result['seconds']} s, {'FAIL' if result['failure'] else 'ok'}")
    unexpected = [n for n, r in report["properties"].items() if r["failure"] and not r["known_failure"]]
    report["total_examples"] = sum(r["examples"] for r in report["properties"].values())
    report["unexpected_failures"] = unexpected
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("max_examples", "total_examples", "unexpected_failures")}))
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
