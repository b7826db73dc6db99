#!/usr/bin/env bash
# Sets up everything bloomr and its tests need, from nothing: a virtualenv with the
# package and its dev tools, Debian's chromium for the browser tests, and the pinned
# Node socket.io-client for the tests.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip >/dev/null
.venv/bin/python -m pip install --quiet -e ".[dev]"

# headless Chromium for the end-to-end tests (tests/e2e): Debian's, driven by Playwright
if ! command -v chromium >/dev/null; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -q chromium >/dev/null \
    || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -q chromium >/dev/null; }
fi

if [ "${1:-}" = "--with-node" ]; then
  if ! command -v npm >/dev/null; then
    echo "npm is needed for the Node client tests" >&2
    exit 1
  fi
  (cd tests/node && npm ci --no-audit --no-fund --silent)
fi
