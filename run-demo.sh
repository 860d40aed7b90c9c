#!/usr/bin/env bash
# The main job on embedded defaults: starts quantum-server on SQLite in a
# temporary state directory and shows a create/list/delete round trip through
# the v2.0 API. Leaves nothing behind.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/bootstrap.sh
source "$ROOT/scripts/bootstrap.sh"
ensure_venv
cd "$ROOT"
exec "$VENV/bin/python" scripts/demo.py "$@"
