#!/usr/bin/env bash
# Debian's prometheus package: `prometheus` for the end-to-end test and `promtool` for the rule unit tests.
# Idempotent: does nothing when promtool is already on PATH. The system service is not started (the tests start
# their own server on a free loopback port with a temporary TSDB).
set -euo pipefail
if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "setup.d/prometheus.sh: apt-get not found; install Prometheus (prometheus, promtool) by hand" >&2
  echo "  the rule and Prometheus end-to-end tests skip without it" >&2
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
cleanup() { if [ "$CREATED_POLICY" = 1 ]; then $SUDO rm -f "$POLICY"; fi; }
trap cleanup EXIT
$SUDO apt-get update -q >/dev/null
$SUDO apt-get install -y -q --no-install-recommends prometheus >/dev/null
command -v promtool >/dev/null
