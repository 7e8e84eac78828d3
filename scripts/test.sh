#!/usr/bin/env bash
# The test command: set up everything the tests need, lint, run the unit tier on the dependency floors, then the
# whole suite on the newest versions.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
.venv/bin/ruff check src tests benchmarks examples
.venv/bin/mypy  # strict, on src/ryot_telemetry ([tool.mypy] in pyproject.toml)
# The docs site, strict: a broken link or anchor, a page left out of the nav or a vanished API name fails.
site="$(mktemp -d)"
trap 'rm -rf "$site"' EXIT
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet --site-dir "$site"
# The floors: the unit tier on every dependency at the lowest version pyproject.toml allows, on Python 3.10
# (.venv-floor, built by scripts/setup.d/floors.sh from scripts/floors.py); then everything on the newest.
RYOT_FLOORS_RUN=1 .venv-floor/bin/python -m pytest -q -p no:cacheprovider tests/unit
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
