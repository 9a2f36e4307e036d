"""Every module of the runtime wheel (``nlb_sdn`` and ``topologies``) imports on a machine without Mininet.

Mininet is the ``lab`` extra: only building a lab (``Lab.__enter__``, ``LabTopo.mininet_topo``) may need it. The
check runs in a fresh interpreter whose import system refuses ``mininet`` and ``mininet.*``, so an installed
Mininet cannot hide a module-level import of it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUNTIME_PACKAGES = ("nlb_sdn", "topologies")
LAB_ONLY: tuple[str, ...] = ()
"""Modules allowed to import Mininet at import time. None: the harness and the topologies import it lazily."""

IMPORT_EVERY_MODULE = """
import importlib, importlib.abc, json, pkgutil, sys

class NoMininet(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "mininet" or name.startswith("mininet."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
        return None

sys.meta_path.insert(0, NoMininet())
packages, lab_only = json.loads(sys.argv[1]), set(json.loads(sys.argv[2]))
failures, imported = {}, []

def failed(name):
    failures[name] = repr(sys.exc_info()[1])

for package in packages:
    try:
        root = importlib.import_module(package)
    except Exception:
        failed(package)
        continue
    imported.append(package)
    for info in pkgutil.walk_packages(root.__path__, package + ".", onerror=failed):
        if info.name in lab_only or info.name in failures or info.name.endswith(".__main__"):
            continue  # a __main__ module runs its program when imported
        try:
            importlib.import_module(info.name)
            imported.append(info.name)
        except Exception:
            failed(info.name)
print(json.dumps({"imported": imported, "failures": failures}))
"""


def test_every_runtime_module_imports_without_mininet() -> None:
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_EVERY_MODULE, json.dumps(RUNTIME_PACKAGES), json.dumps(LAB_ONLY)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["failures"] == {}
    for expected in ("nlb_sdn.lab.harness", "nlb_sdn.lab.demo", "nlb_sdn.cli", "topologies.base", "topologies.fabric"):
        assert expected in report["imported"]
