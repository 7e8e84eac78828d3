#!/usr/bin/env bash
# The test command: set up everything the tests need, lint, then run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
.venv/bin/ruff check src tests benchmarks examples
.venv/bin/mypy  # strict, on src/ryot_telemetry ([tool.mypy] in pyproject.toml)
# The docs site, strict: a broken link or anchor, a page left out of the nav or a vanished API name fails.
site="$(mktemp -d)"
trap 'rm -rf "$site"' EXIT
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet --site-dir "$site"
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
