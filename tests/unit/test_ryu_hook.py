"""The start-up hook that .venv-ryu carries (nlb_sdn/framework/ryu_compat.py as nlb_sdn_ryu_compat + a .pth file): it
applies the eventlet fix before any import of ryu, whatever the entry point, and costs other processes nothing.

These run in the main venv against a stand-in ``ryu`` package that fails as ryu 4.34 does on today's eventlet; the
``ryu``-marked test at the end runs the real bare ``ryu-manager`` of .venv-ryu."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nlb_sdn.framework import ryu_compat

ROOT = Path(__file__).resolve().parents[2]
RYU_MANAGER = ROOT / ".venv-ryu" / "bin" / "ryu-manager"
COMPAT = ROOT / "nlb_sdn" / "framework" / "ryu_compat.py"

# What ryu/app/wsgi.py does in a class body, which ryu.cmd.manager imports before it loads any app.
STAND_IN_RYU = "from eventlet.wsgi import ALREADY_HANDLED\nassert ALREADY_HANDLED == ()\n"


@pytest.fixture
def packages(tmp_path: Path) -> Path:
    """A directory with the stand-in ``ryu`` package."""
    (tmp_path / "packages" / "ryu").mkdir(parents=True)
    (tmp_path / "packages" / "ryu" / "__init__.py").write_text(STAND_IN_RYU)
    return tmp_path / "packages"


def run_with_site(site_dir: Path, packages: Path, code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter that processes ``site_dir`` as a site-packages directory (its .pth files)
    twice, as site.py does for a venv's lib and lib64, with the stand-in ryu importable and nlb_sdn not."""
    prelude = f"import site, sys\nsite.addsitedir({str(site_dir)!r})\nsite.addsitedir({str(site_dir)!r})\n"
    env = {k: v for k, v in os.environ.items() if k not in ("NLB_SDN_FRAMEWORK", "PYTHONPATH")}
    env["PYTHONPATH"] = str(packages)
    return subprocess.run(
        [sys.executable, "-c", prelude + code], env=env, cwd=packages, capture_output=True, text=True, timeout=60
    )


def test_ryu_imports_in_a_process_with_the_hook_and_not_without(tmp_path: Path, packages: Path) -> None:
    site_dir = tmp_path / "site-packages"
    site_dir.mkdir()
    without = run_with_site(site_dir, packages, "import ryu")
    assert "cannot import name 'ALREADY_HANDLED' from 'eventlet.wsgi'" in without.stderr

    assert sorted(ryu_compat.install_hook(str(site_dir))) == ["nlb_sdn_ryu_compat.pth", "nlb_sdn_ryu_compat.py"]
    with_hook = run_with_site(site_dir, packages, "import ryu\nassert 'nlb_sdn' not in sys.modules\nprint('ok')")
    assert with_hook.returncode == 0, with_hook.stderr
    assert with_hook.stdout.split() == ["ok"]
    assert "Eventlet is deprecated" not in with_hook.stderr


def test_the_hook_costs_a_process_that_never_imports_ryu_nothing(tmp_path: Path, packages: Path) -> None:
    ryu_compat.install_hook(str(tmp_path))
    code = (
        "import json, email.message\n"
        "import nlb_sdn_ryu_compat as hook\n"
        "assert [type(f).__name__ for f in sys.meta_path].count('RyuImportHook') == 1, sys.meta_path\n"
        "assert isinstance(sys.meta_path[0], hook.RyuImportHook)\n"
        "assert 'eventlet' not in sys.modules and 'ssl' not in sys.modules and 'nlb_sdn' not in sys.modules\n"
        "import collections\n"
        "assert not hasattr(collections, 'Callable')\n"
        "print('ok')\n"
    )
    result = run_with_site(tmp_path, packages, code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ok"]


def test_install_hook_writes_only_what_is_missing_or_outdated(tmp_path: Path) -> None:
    assert ryu_compat.stale_hook_files(str(tmp_path)) == ["nlb_sdn_ryu_compat.py", "nlb_sdn_ryu_compat.pth"]
    ryu_compat.install_hook(str(tmp_path))
    assert (tmp_path / "nlb_sdn_ryu_compat.py").read_text() == COMPAT.read_text()
    assert (tmp_path / "nlb_sdn_ryu_compat.pth").read_text() == ryu_compat.HOOK_PTH_LINE
    assert ryu_compat.install_hook(str(tmp_path)) == []
    (tmp_path / "nlb_sdn_ryu_compat.py").write_text("# an older copy\n")
    assert ryu_compat.install_hook(str(tmp_path)) == ["nlb_sdn_ryu_compat.py"]
    assert (tmp_path / "nlb_sdn_ryu_compat.py").read_text() == COMPAT.read_text()


def test_the_script_installs_and_checks_without_importing_nlb_sdn(tmp_path: Path) -> None:
    """scripts/ryu-venv.sh runs ryu_compat.py by path: --check exits 1 while the hook is stale, 0 once installed."""

    def script(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-X", "importtime", str(COMPAT), *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert script("--check", str(tmp_path)).returncode == 1
    installed = script(str(tmp_path))
    assert installed.returncode == 0, installed.stderr
    assert " nlb_sdn" not in installed.stderr, "importtime lists nlb_sdn: the script imported the package"
    assert script("--check", str(tmp_path)).returncode == 0
    assert script().returncode == 2


@pytest.mark.ryu
@pytest.mark.skipif(not RYU_MANAGER.exists(), reason="no .venv-ryu (scripts/ryu-venv.sh creates it)")
def test_bare_ryu_manager_starts_without_nlb_sdn_framework_set() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("NLB_SDN_FRAMEWORK", "PYTHONPATH")}
    result = subprocess.run(
        [str(RYU_MANAGER), "--version"], env=env, cwd="/", capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "ryu-manager 4.34" in result.stdout + result.stderr
