#!/usr/bin/env bash
# One command from a fresh clone: set up, lint, type-check and run the whole test suite
# against real processes (bloomr serve, python-socketio and Node socket.io-client).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh --with-node
./scripts/services.sh

.venv/bin/ruff check src tests
.venv/bin/ruff format --check src tests
.venv/bin/mypy src
exec .venv/bin/pytest -q "$@"
