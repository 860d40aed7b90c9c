#!/usr/bin/env bash
# Runs the whole test suite (SQLite, PostgreSQL and MariaDB), installing what it needs.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/bootstrap.sh
source "$ROOT/scripts/bootstrap.sh"
ensure_venv
ensure_databases
ensure_ovs
cd "$ROOT"
"$VENV/bin/ruff" check .
exec "$VENV/bin/python" -m pytest -q "$@"
