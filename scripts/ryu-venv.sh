#!/usr/bin/env bash
# Create (or bring up to date) .venv-ryu: a second virtualenv with ryu 4.34 instead of os-ken, for the ryu smoke test.
#
# ryu 4.34 is unmaintained: its setup.py needs pbr and a setuptools older than 68 (ryu/hooks.py uses
# easy_install.get_script_args, removed in 68; 'setuptools<70' alone fails on a venv that pip fills with 69.x)
# without build isolation. It runs with the same current eventlet as the main venv:
# nlb_sdn.framework.apply_eventlet_fix() patches what ryu 4.34 needs from eventlet and Python 3.11.
# nlb_sdn is installed editable without its dependencies (os-ken would come along otherwise), followed by its
# other runtime dependencies. Last, the start-up hook (nlb_sdn/framework/ryu_compat.py, copied into site-packages
# with a .pth file) applies that fix before any import of ryu, so a bare `ryu-manager nlb_sdn.apps.classifier` runs
# too (docs/framework.md).
#
# Usage: scripts/ryu-venv.sh            (env: PYTHON=python3.11, RYU_VENV=<repo>/.venv-ryu)
# Idempotent: a venv that already has everything is only checked. Quiet unless something fails.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${RYU_VENV:-$ROOT/.venv-ryu}"
PYTHON="${PYTHON:-python3}"

RYU_VERSION="4.34"
EVENTLET_VERSION="0.41.3"
# Our runtime dependencies, read from setup.cfg, without os-ken (ryu takes its place) and eventlet (pinned above), and
# the `ha` extra (tooz, for controller.ha).
mapfile -t DEPS < <("$PYTHON" - "$ROOT/setup.cfg" <<'PYEOF'
import configparser, sys
parser = configparser.ConfigParser()
parser.read(sys.argv[1])
for line in parser["options"]["install_requires"].split() + parser["options.extras_require"]["ha"].split():
    if line and not line.lower().startswith(("os-ken", "eventlet")):
        print(line)
PYEOF
)

log() { printf 'ryu-venv: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Run a command quietly; on failure show its output and stop.
quiet() {
    local out
    if ! out="$("$@" 2>&1)"; then
        printf '%s\n' "$out" >&2
        die "failed: $*"
    fi
}

command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (set PYTHON=...)"

PY="$VENV/bin/python"
if [[ ! -x "$PY" ]] || ! "$PY" -c 'import sys' >/dev/null 2>&1; then
    log "creating $VENV with $PYTHON"
    rm -rf "$VENV"
    quiet "$PYTHON" -m venv "$VENV"
fi
"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' >/dev/null 2>&1 \
    || log "warning: $VENV is not Python 3.11 ($("$PY" -V 2>&1)); the recipe is tested with 3.11"

PIP=("$PY" -m pip --quiet --disable-pip-version-check --no-input)

SITE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
COMPAT="$ROOT/nlb_sdn/framework/ryu_compat.py"

# The packages in place, and importing ryu through our framework module?
check_packages() {
    NLB_SDN_FRAMEWORK=ryu "$PY" - <<EOF >/dev/null 2>&1
import importlib.metadata as md
assert md.version("ryu") == "$RYU_VERSION"
assert md.version("eventlet") == "$EVENTLET_VERSION"
assert int(md.version("dnspython").split(".")[0]) >= 2
for req in "${DEPS[*]}".split():
    name, ver = req.split("==")
    assert md.version(name) == ver, req
import nlb_sdn, os
assert os.path.realpath(os.path.dirname(nlb_sdn.__file__)) == os.path.realpath("$ROOT/nlb_sdn")
from nlb_sdn import framework
assert framework.NAME == "ryu"
import ryu.cmd.manager, ryu.controller.controller, ryu.app.wsgi
EOF
}

# The start-up hook current, and a bare ryu-manager (no NLB_SDN_FRAMEWORK, nlb_sdn not imported) importing?
check_hook() {
    "$PY" "$COMPAT" --check "$SITE" && (cd / && env -u NLB_SDN_FRAMEWORK "$VENV/bin/ryu-manager" --version) \
        >/dev/null 2>&1
}

if check_packages && check_hook; then
    exit 0
fi

if ! check_packages; then
    log "installing ryu $RYU_VERSION and dependencies into $VENV"
    quiet "${PIP[@]}" install 'setuptools>=64,<68' pbr wheel
    quiet "${PIP[@]}" install --no-build-isolation "ryu==$RYU_VERSION" "eventlet==$EVENTLET_VERSION" 'dnspython>=2'
    quiet "${PIP[@]}" install "${DEPS[@]}"
    quiet "${PIP[@]}" install --no-build-isolation --no-deps -e "$ROOT"
    if ! check_packages; then
        NLB_SDN_FRAMEWORK=ryu "$PY" -c 'from nlb_sdn import framework; import ryu.cmd.manager' >&2 || true
        die "$VENV was built but does not import ryu through nlb_sdn.framework"
    fi
fi

if ! check_hook; then
    log "installing the ryu start-up hook into $SITE"
    quiet "$PY" "$COMPAT" "$SITE"
    if ! check_hook; then
        (cd / && env -u NLB_SDN_FRAMEWORK "$VENV/bin/ryu-manager" --version) >&2 || true
        die "a bare ryu-manager in $VENV does not start with the hook installed"
    fi
fi
log "ready: $VENV"
