#!/usr/bin/env bash
# Lints the tree with the venv's pinned tools: ruff check, ruff format --check, and mypy on its configured targets
# (pyproject.toml). Installs the `lint` extra into .venv first when ruff or mypy is missing. Exits non-zero on any
# finding. Arguments go to `ruff check` (e.g. --statistics).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
if [ ! -x "$VENV/bin/ruff" ] || [ ! -x "$VENV/bin/mypy" ]; then
  if [ ! -x "$VENV/bin/pip" ]; then
    echo "nlb_sdn: no $VENV: run scripts/bootstrap.sh first" >&2
    exit 1
  fi
  echo "nlb_sdn: installing the lint extra into $VENV"
  "$VENV/bin/pip" install -q -e '.[lint]'
fi

status=0
echo "== ruff check"
"$VENV/bin/ruff" check "$@" . || status=1
echo "== ruff format --check"
"$VENV/bin/ruff" format --check . || status=1
echo "== mypy"
"$VENV/bin/mypy" || status=1
exit "$status"
