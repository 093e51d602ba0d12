#!/usr/bin/env bash
# Run a demo district: firmware-sim sensors -> gateway -> private MQTT broker -> collector (SQLite) -> HTTP API.
# Extra arguments go to `lifeline demo` (e.g. --duration 60, --http-port 8080).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/lifeline demo "$@"
