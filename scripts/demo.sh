#!/usr/bin/env bash
# One command from a fresh clone: set up, then run bloomr with a demo stream that ticks
# every second, printing a ready-to-paste Socket.IO client snippet.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/bloomr serve --demo --port "${BLOOMR_PORT:-8080}" --data-dir "${BLOOMR_DATA_DIR:-./bloomr-data}" "$@"
