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
  # nginx from the distribution, for the load-balancer test (deploy/nginx.conf)
  if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      log=$(mktemp)
      if ! { apt-get -o DPkg::Lock::Timeout=600 update -qq &&
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq nginx
      } >"$log" 2>&1; then
        cat "$log" >&2
        exit 1
      fi
      rm -f "$log"
    else
      echo "nginx is needed for tests/integration/test_nginx.py: install it (apt-get install nginx)" >&2
    fi
  fi
fi
