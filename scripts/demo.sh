#!/usr/bin/env bash
# The main job: set up, then run the demo on the embedded simulated model (extra args go to `ryot-telemetry demo`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/ryot-telemetry demo "$@"
