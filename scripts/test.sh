#!/usr/bin/env bash
# The whole test suite on a fresh clone, in one command:
#   creates .venv, installs tai-fsm with its dev extra, installs Graphviz if missing,
#   runs ruff, mypy --strict and pytest. pytest starts Google's Firestore emulator itself
#   (tai_fsm/testing/emulator.py: java on a free 127.0.0.1 port, stopped by pid at the end)
#   unless FIRESTORE_EMULATOR_HOST already points at one.
# Extra arguments go to pytest, e.g. scripts/test.sh -k sqlite -x
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/setup-env.sh

if [ -z "${FIRESTORE_EMULATOR_HOST:-}" ]; then
    jar=$(dpkg -L google-cloud-cli-firestore-emulator 2>/dev/null | grep 'cloud-firestore-emulator.jar$' || true)
    if [ -z "$jar" ] || [ ! -f "$jar" ]; then
        echo "ERROR: Google's Firestore emulator jar is missing (Debian package google-cloud-cli-firestore-emulator)." >&2
        echo "       The Firestore tests never skip silently; install it or set FIRESTORE_EMULATOR_HOST." >&2
        exit 1
    fi
fi

if ! command -v dot >/dev/null 2>&1; then
    echo "== installing Graphviz (dot) for diagram tests"
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz >/dev/null
    else
        sudo apt-get update -qq >/dev/null && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz >/dev/null
    fi
fi

echo "== ruff"
.venv/bin/ruff check tai_fsm tests benchmarks examples
echo "== mypy --strict tai_fsm"
.venv/bin/mypy --strict tai_fsm
echo "== pytest"
.venv/bin/python -m pytest -q -p no:randomly "$@"
