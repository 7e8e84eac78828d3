# Sourced by scripts/setup.d/*.sh, never run as a set-up step itself (scripts/setup.sh runs setup.d/*.sh only).
# apt_install PACKAGE WHAT HINT CHECK: installs the Debian PACKAGE quietly, without starting its packaged service,
# then checks that the command CHECK is on PATH. Without apt-get: says to install WHAT by hand (HINT: what skips
# meanwhile) and returns 0. The body is a subshell, so its EXIT trap cleans up when the function returns.
apt_install() (
  set -euo pipefail
  local package=$1 what=$2 hint=$3 check=$4 script
  script="setup.d/${0##*/}"
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "$script: apt-get not found; install $what by hand" >&2
    echo "  $hint" >&2
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
  if ! apt-cache show "$package" >/dev/null 2>&1; then
    $SUDO apt-get update -q >"$log" 2>&1 || { tail -20 "$log" >&2; exit 1; }
  fi
  # Another apt run (a second setup script, an unattended upgrade) may hold the dpkg lock: wait for it, bounded.
  # apt's and debconf's chatter is shown only when the install fails.
  if ! $SUDO apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=300 "$package" >"$log" 2>&1; then
    echo "$script: installing $package failed:" >&2
    tail -20 "$log" >&2
    exit 1
  fi
  command -v "$check" >/dev/null
)
