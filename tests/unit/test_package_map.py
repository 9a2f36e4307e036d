"""The package map holds: which package may import which, and which module alone owns a layout."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def loaded_after_import(module: str) -> list[str]:
    """The ``nlb_sdn`` modules a fresh interpreter has loaded after importing ``module``."""
    code = (f"import json, sys; import {module}; "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('nlb_sdn'))))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                            check=True)
    return json.loads(result.stdout)


def test_config_does_not_import_the_router() -> None:
    loaded = loaded_after_import("nlb_sdn.config")
    assert "nlb_sdn.config.routing" in loaded
    assert not [name for name in loaded if name == "nlb_sdn.router" or name.startswith("nlb_sdn.router.")], loaded
