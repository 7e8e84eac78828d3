#!/usr/bin/env bash
# .venv312-llama-stack: Python 3.12 with llama-stack 0.7.3 (the release most llama-stack users still run, before the
# rename to ogx) and ryot-telemetry, for tests/e2e/test_llama_stack.py's `llama stack run` tier.
# llama-stack 0.7.3 fails with mcp >= 1.26 (a llama-stack bug), so mcp is pinned below 1.26 beside it.
# Idempotent and quiet: a marker inside the venv (llama-stack version + pyproject hash) skips the install when current.
# No Python 3.12 on this machine: says so and exits 0; the test then skips with that reason (fails under CI=true).
set -euo pipefail
cd "$(dirname "$0")/../.."
LLAMA_STACK_VERSION=0.7.3
source scripts/lib/venv312.sh
venv312 .venv312-llama-stack "the llama-stack cases of tests/e2e/test_llama_stack.py will be skipped" \
  "llama-stack==$LLAMA_STACK_VERSION" "mcp<1.26"
