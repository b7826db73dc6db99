#!/usr/bin/env bash
# One command from a fresh clone: set up, lint, type-check and run the whole test suite
# against real processes (bloomr serve, python-socketio and Node socket.io-client).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh --with-node
./scripts/services.sh

.venv/bin/ruff check src tests scripts
.venv/bin/ruff format --check src tests scripts
.venv/bin/mypy src
# known vulnerabilities in requirements.lock and tests/node: a finding fails, a service
# out of reach is a warning
.venv/bin/python scripts/deps.py audit
exec .venv/bin/pytest -q "$@"
