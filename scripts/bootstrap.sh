#!/usr/bin/env bash
# Shared set-up for run-demo.sh and run-tests.sh: a venv with the project and
# its test dependencies, and the local database servers the tests use.
# Idempotent; safe to run on a fresh Debian machine as root.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${QRP_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"

log() { printf '[bootstrap] %s\n' "$*" >&2; }

ensure_venv() {
    if [ ! -x "$VENV/bin/python" ]; then
        log "creating virtualenv $VENV"
        "$PY" -m venv "$VENV"
    fi
    local stamp="$VENV/.qrp-installed"
    if [ ! -f "$stamp" ] || [ "$ROOT/setup.py" -nt "$stamp" ]; then
        log "installing quantum-restproxy and test dependencies"
        "$VENV/bin/pip" install -q --upgrade pip >&2
        # compat mode puts the checkout on sys.path, so twistd finds twisted/plugins here.
        "$VENV/bin/pip" install -q -e "$ROOT[test]" --config-settings editable_mode=compat >&2
        touch "$stamp"
    fi
}

tcp_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

ensure_databases() {
    if ! tcp_open 5432; then
        log "starting PostgreSQL"
        if command -v pg_ctlcluster >/dev/null; then
            pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
        fi
    fi
    if ! tcp_open 3306; then
        log "starting MariaDB"
        if [ -x /usr/sbin/mariadbd ]; then
            start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || true
        fi
    fi
    for _ in $(seq 1 60); do
        if tcp_open 5432 && tcp_open 3306; then return 0; fi
        sleep 1
    done
    # The tests run on every backend: without one CI must fail, not skip its tests.
    tcp_open 5432 || log "error: PostgreSQL is not reachable on 127.0.0.1:5432"
    tcp_open 3306 || log "error: MariaDB is not reachable on 127.0.0.1:3306"
    exit 1
}

# Open vSwitch (userspace datapath) for the agent plumbing tests. The tests run
# private ovsdb-server/ovs-vswitchd instances, so the system service must not
# start: a temporary policy-rc.d (exit 101) keeps the package scripts from it.
ensure_ovs() {
    if command -v ovsdb-server >/dev/null && command -v ip >/dev/null && command -v ping >/dev/null; then
        return 0
    fi
    log "installing Open vSwitch (service not started)"
    local policy=/usr/sbin/policy-rc.d added=""
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && added=1
    fi
    local ok=1
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o Dpkg::Use-Pty=0 \
        openvswitch-switch iproute2 iputils-ping ethtool >/dev/null \
        || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o Dpkg::Use-Pty=0 \
            openvswitch-switch iproute2 iputils-ping ethtool >/dev/null; } \
        || ok=""
    if [ -n "$added" ]; then rm -f "$policy"; fi
    if [ -z "$ok" ] || ! command -v ovsdb-server >/dev/null; then
        # The agent and demo tests need a real OVS: without it CI must fail, not skip them.
        log "error: could not install Open vSwitch (openvswitch-switch iproute2 iputils-ping ethtool)"
        exit 1
    fi
}

# Keystone for the OpenStack tests (tests/test_keystone_auth.py, test_nova_events.py) and
# `demo --keystone`: in its own venv, since its pins fight the project's. gunicorn serves
# its WSGI application (restproxy_testing/keystone.py). Without it CI must fail, not skip.
KEYSTONE_VENV="${QRP_KEYSTONE_VENV:-$ROOT/.venv-keystone}"
ensure_keystone() {
    if [ -x "$KEYSTONE_VENV/bin/keystone-manage" ] && [ -x "$KEYSTONE_VENV/bin/gunicorn" ]; then
        return 0
    fi
    log "installing Keystone and gunicorn in $KEYSTONE_VENV"
    if ! { "$PY" -m venv "$KEYSTONE_VENV" \
        && "$KEYSTONE_VENV/bin/pip" install -q --upgrade pip >&2 \
        && "$KEYSTONE_VENV/bin/pip" install -q keystone gunicorn >&2; } \
        || [ ! -x "$KEYSTONE_VENV/bin/keystone-manage" ]; then
        log "error: could not install keystone and gunicorn in $KEYSTONE_VENV"
        exit 1
    fi
}

# DHCP: dnsmasq (dnsmasq-base: the binary, no system service), dhcp_release (dnsmasq-utils), and the VMs'
# DHCP clients for the tests and the demo (busybox udhcpc; isc-dhcp-client's dhclient). setsid is util-linux.
ensure_dhcp() {
    if command -v dnsmasq >/dev/null && [ -x /usr/bin/dhcp_release ] && command -v busybox >/dev/null \
        && command -v dhclient >/dev/null && command -v setsid >/dev/null; then
        return 0
    fi
    log "installing dnsmasq-base dnsmasq-utils busybox isc-dhcp-client"
    local pkgs="dnsmasq-base dnsmasq-utils busybox isc-dhcp-client util-linux"
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o Dpkg::Use-Pty=0 $pkgs >/dev/null \
        || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o Dpkg::Use-Pty=0 $pkgs >/dev/null; } \
        || true
    if ! command -v dnsmasq >/dev/null || [ ! -x /usr/bin/dhcp_release ] || ! command -v busybox >/dev/null; then
        # The DHCP agent's tests and the demo need them: without them CI must fail, not skip.
        log "error: could not install $pkgs"
        exit 1
    fi
}
