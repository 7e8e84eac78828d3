#!/usr/bin/env bash
# The test command: set up everything the tests need, lint, then run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
.venv/bin/ruff check src tests benchmarks examples
.venv/bin/mypy  # strict, on src/ryot_telemetry ([tool.mypy] in pyproject.toml)
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
