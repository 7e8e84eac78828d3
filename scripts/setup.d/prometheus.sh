#!/usr/bin/env bash
# Debian's prometheus package: `prometheus` for the end-to-end test and `promtool` for the rule unit tests.
# Idempotent and quiet: does nothing when promtool is already on PATH. The system service is not started (the tests
# start their own server on a free loopback port with a temporary TSDB).
set -euo pipefail
if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
  exit 0
fi
source "$(dirname "$0")/../lib/apt.sh"
apt_install prometheus "Prometheus (prometheus, promtool)" "the rule and Prometheus end-to-end tests skip without it" \
  promtool
