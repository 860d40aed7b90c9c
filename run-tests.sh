#!/usr/bin/env bash
# Runs the test suite, installing what it needs.
#   ./run-tests.sh [pytest args]          everything: SQLite, PostgreSQL, MariaDB and OVS (strict: a missing
#                                         database or a test left without its backend fails the run;
#                                         QRP_TEST_BACKENDS=sqlite limits the backends and is not strict, unless CI)
#                                         QRP_TEST_WORKERS=N sets the pytest-xdist workers (default 3; 0: in process)
#   ./run-tests.sh --quick [pytest args]  only the fast tier (tests marked "fast": in-process, on a Clock; < 60 s)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/bootstrap.sh
source "$ROOT/scripts/bootstrap.sh"
ensure_venv
cd "$ROOT"
if [ "${1:-}" = "--quick" ]; then
    shift
    "$VENV/bin/ruff" check .
    exec "$VENV/bin/python" -m pytest -q -m fast "${@:-tests/fast}"
fi
ensure_databases
ensure_ovs
ensure_keystone
ensure_dhcp
"$VENV/bin/ruff" check .
if [ -z "${QRP_TEST_BACKENDS:-}" ]; then
    export QRP_TEST_STRICT="${QRP_TEST_STRICT:-1}"  # every backend: none may be missing (CI is always strict)
fi
# The slow tests mostly wait on real daemons: three workers, one test file each at a time (module fixtures stay whole).
# The 20 slowest tests are listed at the end (CI takes ~15 min on the faster machines of this kind, ~24 on the slower).
exec "$VENV/bin/python" -m pytest -q -n "${QRP_TEST_WORKERS:-3}" --dist loadfile --durations=20 "$@"
