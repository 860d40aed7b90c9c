#!/usr/bin/env bash
# The main job end to end on embedded defaults: a private Open vSwitch, the
# controller simulator, quantum-server on SQLite and a restproxy-agent; two
# networks, three ports in namespaces as VMs, ping/TCP/isolation, then
# everything removed. Needs root. Leaves nothing behind, also on Ctrl-C.
# Options: --controllers host:port[,host:port] to use real controllers;
# --openflow host:port (or none) for br-int's OpenFlow controller (default: Floodlight's
# port 6633 when the controllers are Floodlight); --sim-profile floodlight; --keystone for a
# local Keystone and a stand-in Nova (auth_strategy = keystone, Nova's port events).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/bootstrap.sh
source "$ROOT/scripts/bootstrap.sh"
ensure_venv
ensure_ovs
case " $* " in *" --keystone "*) ensure_keystone ;; esac
ensure_dhcp
cd "$ROOT"
exec "$VENV/bin/python" scripts/demo.py "$@"
