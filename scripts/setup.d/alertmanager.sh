#!/usr/bin/env bash
# Debian's prometheus-alertmanager, for tests/e2e/test_alertmanager.py (the shipped alerts delivered to a webhook).
# Idempotent and quiet: does nothing when prometheus-alertmanager is already on PATH. The system service is not
# started (the test starts its own Alertmanager on a free loopback port with a temporary data directory).
set -euo pipefail
if command -v prometheus-alertmanager >/dev/null 2>&1; then
  exit 0
fi
source "$(dirname "$0")/../lib/apt.sh"
apt_install prometheus-alertmanager "Alertmanager (prometheus-alertmanager)" \
  "the Alertmanager end-to-end test skips without it (and fails under CI=true)" prometheus-alertmanager
