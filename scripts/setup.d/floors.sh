#!/usr/bin/env bash
# .venv-floor: ryot-telemetry with every dependency at the lowest version pyproject.toml allows (scripts/floors.py),
# on the lowest Python it allows (3.10) where one is found, for the unit-tier run on the floors in scripts/test.sh.
# First, the user's install with every dependency pinned to its floor must resolve (pip install --dry-run).
# Idempotent and quiet: a marker inside .venv-floor (a hash of pyproject.toml and scripts/floors.py) skips a
# current one.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=.venv-floor

PY=""
for p in "$(command -v python3.10 || true)" "$HOME"/.pyenv/versions/3.10*/bin/python3.10 "${PYTHON:-python3}"; do
  # a pyenv shim is on PATH even where 3.10 is not selected: only take an interpreter that runs
  if [ -n "$p" ] && "$p" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    PY=$p
    break
  fi
done

want="$(cat pyproject.toml scripts/floors.py | sha256sum | cut -c1-16) $("$PY" -c 'import sys; print(sys.version.split()[0])')"
marker="$VENV/.ryot-setup"
if [ -x "$VENV/bin/python" ] && [ "$(cat "$marker" 2>/dev/null)" = "$want" ]; then
  exit 0
fi

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
fail() {
  echo "floors.sh: $1:" >&2
  grep -v '^WARNING: Location' "$log" | tail -25 >&2
  rm -f "$marker"
  exit 1
}
rm -rf "$VENV"
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
"$VENV/bin/python" -m pip install -q tomli >/dev/null 2>&1 || true  # scripts/floors.py on Python 3.10
"$VENV/bin/python" scripts/floors.py >"$VENV/floors.txt"
"$VENV/bin/python" scripts/floors.py --test >"$VENV/floors-test.txt"
extras="$("$VENV/bin/python" scripts/floors.py --extras)"
# what a user installs (the base and every user extra), every dependency at its floor: it must resolve
"$VENV/bin/python" -m pip install -q --dry-run --ignore-installed -c "$VENV/floors.txt" ".[$extras]" >"$log" 2>&1 ||
  fail "ryot-telemetry[$extras] with every dependency at its floor does not resolve"
# the floor venv: that install, and the test extra (its OpenTelemetry packages at their floors too)
"$VENV/bin/python" -m pip install -q -c "$VENV/floors-test.txt" -e ".[test,$extras]" >"$log" 2>&1 ||
  fail "installing ryot-telemetry[test,$extras] at the floors into $VENV failed"
echo "$want" >"$marker"
