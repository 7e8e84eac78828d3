#!/usr/bin/env bash
# .venv312: Python 3.12 with ogx (llama-stack's new name) and ryot-telemetry, for tests/e2e/test_llama_stack.py.
# Idempotent and quiet: a marker inside .venv312 (ogx version + pyproject hash) skips the install when current.
# No Python 3.12 on this machine: says so and exits 0; the test then skips with that reason.
set -euo pipefail
cd "$(dirname "$0")/../.."
OGX_VERSION=1.5.0
source scripts/lib/venv312.sh
venv312 .venv312 "tests/e2e/test_llama_stack.py will be skipped" "ogx==$OGX_VERSION"
