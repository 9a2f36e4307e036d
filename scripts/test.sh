#!/usr/bin/env bash
# Runs every test: unit, fake-table, Mininet lab and the ryu 4.34 smoke test. Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
bash scripts/ryu-venv.sh
export PATH="$PWD/.venv/bin:$PATH"
mn -c >/dev/null 2>&1 || true
exec .venv/bin/python -m pytest -ra "$@" tests
