# Sourced by scripts/setup.d/*.sh, never run as a set-up step itself (scripts/setup.sh runs setup.d/*.sh only).
# venv312 VENV SKIPS REQUIREMENT...: a Python 3.12 virtualenv VENV (relative to the repository root, the working
# directory) with the REQUIREMENTs and ryot-telemetry (editable). Idempotent and quiet: a marker inside VENV (the
# requirements + pyproject hash) skips the install when current. No Python 3.12 on this machine: says so, naming what
# SKIPS without it, and returns 0. The body is a subshell, so its EXIT trap cleans up when the function returns.
venv312() (
  set -euo pipefail
  local venv=$1 skips=$2 script=${0##*/}
  shift 2
  local py312=""
  for p in "$(command -v python3.12 || true)" "$HOME"/.pyenv/versions/3.12*/bin/python3.12; do
    # a pyenv shim is on PATH even where 3.12 is not selected: only take an interpreter that runs as 3.12
    if [ -n "$p" ] && [ -x "$p" ] && "$p" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null; then
      py312=$p
      break
    fi
  done
  if [ -z "$py312" ]; then
    echo "$script: no Python 3.12 (python3.12 on PATH or ~/.pyenv/versions/3.12*/bin); skipping $venv, $skips"
    exit 0
  fi

  local want marker="$venv/.ryot-setup"
  want="$* $(sha256sum pyproject.toml | cut -c1-16)"
  if [ -x "$venv/bin/python" ] && [ "$(cat "$marker" 2>/dev/null)" = "$want" ]; then
    exit 0
  fi

  log="$(mktemp)"
  trap 'rm -f "$log"' EXIT
  if [ ! -x "$venv/bin/python" ]; then
    "$py312" -m venv "$venv"
  fi
  if ! "$venv/bin/python" -m pip install -q "$@" -e . >"$log" 2>&1; then
    echo "$script: installing $* into $venv failed:" >&2
    grep -v '^WARNING: Location' "$log" | tail -20 >&2
    rm -f "$marker"
    exit 1
  fi
  echo "$want" >"$marker"
)
