#!/usr/bin/env bash
# Brings up the fabric lab with the controller, makes a few hundred connections to the VIP, prints the shares, tears down.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"
exec .venv/bin/python -m nlb_sdn.lab.demo "$@"
