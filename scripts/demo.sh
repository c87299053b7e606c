#!/usr/bin/env bash
# The main job on a fresh clone: set up .venv, then run `tai-fsm demo` on the SQLite default.
# Extra arguments go to `tai-fsm demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup-env.sh
exec .venv/bin/tai-fsm demo "$@"
