#!/usr/bin/env bash
# Create (or re-create) an Open vSwitch bridge as an nlb_sdn forwarder: OpenFlow 1.3, fail_mode=secure, a fixed
# datapath id, the controllers to connect to, optional TLS, and the ports to attach. docs/operations.md explains it.
#
#   deploy/ovs-bridge.sh --bridge s1 --dpid 1 --datapath system \
#       --controller ssl:10.99.0.254:6653 --controller ssl:10.99.0.253:6653 \
#       --ssl /etc/openvswitch/sc-privkey.pem /etc/openvswitch/sc-cert.pem /etc/openvswitch/cacert.pem \
#       --port eth1 --port eth2
#
# --datapath system is the Linux kernel datapath (needs the openvswitch module; checked first), netdev the
# userspace one (what the Mininet labs use). --dry-run prints the ovs-vsctl commands instead of running them.
set -euo pipefail

bridge="" dpid="" datapath="system" dry_run=0
controllers=() ports=() ssl=()

die() { echo "ovs-bridge: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
    case "$1" in
        --bridge) bridge="${2:?}"; shift 2 ;;
        --dpid) dpid="${2:?}"; shift 2 ;;
        --datapath) datapath="${2:?}"; shift 2 ;;
        --controller) controllers+=("${2:?}"); shift 2 ;;
        --port) ports+=("${2:?}"); shift 2 ;;
        --ssl) ssl=("${2:?}" "${3:?}" "${4:?}"); shift 4 ;;
        --dry-run) dry_run=1; shift ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) die "unknown argument: $1" ;;
    esac
done

[ -n "$bridge" ] || die "--bridge is required"
[[ "$dpid" =~ ^[0-9]+$ ]] || die "--dpid must be a decimal number (the fabric's switches[].dpid)"
[ "${#controllers[@]}" -gt 0 ] || die "at least one --controller (tcp:IP:PORT or ssl:IP:PORT) is required"
case "$datapath" in
    system)
        if [ "$dry_run" = 0 ] && [ ! -d /sys/module/openvswitch ] && ! modprobe -q openvswitch 2>/dev/null; then
            die "--datapath system needs the kernel's openvswitch module, which is not loaded and cannot be loaded here (use --datapath netdev for the userspace datapath)"
        fi ;;
    netdev) ;;
    *) die "--datapath must be system (kernel) or netdev (userspace), not $datapath" ;;
esac
for target in "${controllers[@]}"; do
    [[ "$target" =~ ^(tcp|ssl):[^:]+:[0-9]+$ ]] || die "controller $target is not tcp:IP:PORT or ssl:IP:PORT"
    if [[ "$target" == ssl:* ]] && [ "${#ssl[@]}" = 0 ]; then die "controller $target needs --ssl KEY CERT CA"; fi
done

run() {
    if [ "$dry_run" = 1 ]; then printf '%s\n' "$*"; else "$@"; fi
}

run ovs-vsctl --may-exist add-br "$bridge" -- set bridge "$bridge" datapath_type="$datapath" \
    protocols=OpenFlow13 fail_mode=secure other-config:datapath-id="$(printf '%016x' "$dpid")" \
    other-config:disable-in-band=true
if [ "${#ssl[@]}" = 3 ]; then
    run ovs-vsctl set-ssl "${ssl[0]}" "${ssl[1]}" "${ssl[2]}"
fi
run ovs-vsctl set-controller "$bridge" "${controllers[@]}"
for port in "${ports[@]}"; do
    run ovs-vsctl --may-exist add-port "$bridge" "$port"
done
