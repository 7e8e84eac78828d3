#!/usr/bin/env bash
# .venv312-llama-stack: Python 3.12 with llama-stack 0.7.3 (the release most llama-stack users still run, before the
# rename to ogx) and ryot-telemetry, for tests/e2e/test_llama_stack.py's `llama stack run` tier.
# llama-stack 0.7.3 fails with mcp >= 1.26 (a llama-stack bug), so mcp is pinned below 1.26 beside it.
# Idempotent and quiet: a marker inside the venv (llama-stack version + pyproject hash) skips the install when current.
# No Python 3.12 on this machine: says so and exits 0; the test then skips with that reason (fails under CI=true).
set -euo pipefail
cd "$(dirname "$0")/../.."
LLAMA_STACK_VERSION=0.7.3
VENV=.venv312-llama-stack

PY312=""
for p in "$(command -v python3.12 || true)" "$HOME"/.pyenv/versions/3.12*/bin/python3.12; do
  # a pyenv shim is on PATH even where 3.12 is not selected: only take an interpreter that runs as 3.12
  if [ -n "$p" ] && [ -x "$p" ] && "$p" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null; then
    PY312=$p
    break
  fi
done
if [ -z "$PY312" ]; then
  echo "llama_stack_07.sh: no Python 3.12 (python3.12 on PATH or ~/.pyenv/versions/3.12*/bin); skipping $VENV," \
       "the llama-stack cases of tests/e2e/test_llama_stack.py will be skipped"
  exit 0
fi

want="llama-stack==$LLAMA_STACK_VERSION mcp<1.26 $(sha256sum pyproject.toml | cut -c1-16)"
marker="$VENV/.ryot-setup"
if [ -x "$VENV/bin/python" ] && [ "$(cat "$marker" 2>/dev/null)" = "$want" ]; then
  exit 0
fi

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if [ ! -x "$VENV/bin/python" ]; then
  "$PY312" -m venv "$VENV"
fi
if ! "$VENV/bin/python" -m pip install -q "llama-stack==$LLAMA_STACK_VERSION" "mcp<1.26" -e . >"$log" 2>&1; then
  echo "llama_stack_07.sh: installing llama-stack==$LLAMA_STACK_VERSION into $VENV failed:" >&2
  grep -v '^WARNING: Location' "$log" | tail -20 >&2
  rm -f "$marker"
  exit 1
fi
echo "$want" >"$marker"
