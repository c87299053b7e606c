# Sourced by scripts/test.sh and scripts/demo.sh: make .venv and install tai-fsm into it.
# Re-running is cheap: pip only installs what changed.
PY=""
for candidate in python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        PY=$candidate; break
    fi
done
if [ -z "$PY" ]; then echo "ERROR: tai-fsm needs Python >= 3.11" >&2; exit 1; fi
if [ ! -x .venv/bin/python ]; then
    echo "== creating .venv with $PY"
    "$PY" -m venv .venv
fi
echo "== installing tai-fsm into .venv"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev]"
