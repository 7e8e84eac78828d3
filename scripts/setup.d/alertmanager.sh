#!/usr/bin/env bash
# Debian's prometheus-alertmanager, for tests/e2e/test_alertmanager.py (the shipped alerts delivered to a webhook).
# Idempotent and quiet: does nothing when prometheus-alertmanager is already on PATH. The system service is not
# started (the test starts its own Alertmanager on a free loopback port with a temporary data directory).
set -euo pipefail
if command -v prometheus-alertmanager >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "setup.d/alertmanager.sh: apt-get not found; install Alertmanager (prometheus-alertmanager) by hand" >&2
  echo "  the Alertmanager end-to-end test skips without it (and fails under CI=true)" >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
# policy-rc.d exit 101 keeps dpkg from starting the packaged service during the install.
POLICY=/usr/sbin/policy-rc.d
CREATED_POLICY=0
if [ ! -e "$POLICY" ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
  $SUDO chmod +x "$POLICY"
  CREATED_POLICY=1
fi
log="$(mktemp)"
cleanup() {
  rm -f "$log"
  if [ "$CREATED_POLICY" = 1 ]; then $SUDO rm -f "$POLICY"; fi
}
trap cleanup EXIT
# The package index is fetched only when the package is unknown to apt (a fresh image has an empty index).
if ! apt-cache show prometheus-alertmanager >/dev/null 2>&1; then
  $SUDO apt-get update -q >"$log" 2>&1 || { tail -20 "$log" >&2; exit 1; }
fi
# Another apt run (a second setup script, an unattended upgrade) may hold the dpkg lock: wait for it, bounded.
# apt's and debconf's chatter is shown only when the install fails.
if ! $SUDO apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=300 prometheus-alertmanager \
    >"$log" 2>&1; then
  echo "setup.d/alertmanager.sh: installing prometheus-alertmanager failed:" >&2
  tail -20 "$log" >&2
  exit 1
fi
command -v prometheus-alertmanager >/dev/null
