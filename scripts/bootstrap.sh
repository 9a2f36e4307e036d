#!/usr/bin/env bash
# Installs what nlb_sdn needs on a fresh Debian machine (idempotent): apt packages, the venv, a running Open vSwitch.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(openvswitch-switch mininet ethtool iproute2 tcpdump procps psmisc redis-server redis-sentinel haproxy apache2-utils chromium chromium-driver)
VENV_CHECK="import nlb_sdn, os_ken, mininet, pytest, schemathesis, selenium, prometheus_client, matplotlib, mypy"

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "nlb_sdn: the lab needs root (Mininet and Open vSwitch); run with sudo" >&2
    exit 1
  fi
}

install_apt() {
  local missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  python3 -m venv --help >/dev/null 2>&1 || missing+=(python3-venv)
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "nlb_sdn: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

venv_ready() {
  # ruff is a binary, not a module: it is checked by running it.
  .venv/bin/python -c "$VENV_CHECK" 2>/dev/null && .venv/bin/ruff --version >/dev/null 2>&1
}

install_venv() {
  if [ ! -x .venv/bin/python ] || ! venv_ready || [ setup.cfg -nt .venv/.installed ]; then
    echo "nlb_sdn: creating .venv"
    python3 -m venv .venv
    if ! .venv/bin/pip install -q -e '.[test,lab,bench,lint,ha]' >.venv/pip.log 2>&1; then
      cat .venv/pip.log >&2
      exit 1
    fi
    .venv/bin/python -c "$VENV_CHECK"
    .venv/bin/ruff --version >/dev/null
    touch .venv/.installed
  fi
}

start_ovs() {
  if ! ovs-vsctl --timeout=5 show >/dev/null 2>&1; then
    echo "nlb_sdn: starting Open vSwitch (userspace datapath)"
    /usr/share/openvswitch/scripts/ovs-ctl start --system-id=random >/dev/null
  fi
  ovs-vsctl --timeout=5 show >/dev/null
}

need_root
install_apt
install_venv
start_ovs
