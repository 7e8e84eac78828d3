#!/usr/bin/env bash
# Idempotent set-up: a virtualenv in .venv with ryot-telemetry installed (editable).
#   scripts/setup.sh          runtime + examples (what the demo needs)
#   scripts/setup.sh test     + test and docs dependencies, Debian's prometheus (promtool), the llama-stack 3.12 venv
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if [ "${1:-}" = "test" ]; then
  .venv/bin/python -m pip install -q -e ".[test,examples,gpu,docs]"
  for s in scripts/setup.d/*.sh; do
    [ -e "$s" ] && bash "$s"
  done
else
  .venv/bin/python -m pip install -q -e ".[examples]"
fi
