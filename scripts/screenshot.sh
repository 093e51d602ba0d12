#!/usr/bin/env bash
# Regenerate docs/img/console.png, the README's screenshot of the console: runs the demo district
# until it has raised alarms and opened cases, then photographs the console at 1920 x 1080 in
# headless Chromium (scripts/setup.sh --tests installs Chromium, chromedriver and a CJK font).
# Extra arguments go to `python -m lifeline.screenshot` (e.g. --out /tmp/console.png).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --tests
exec .venv/bin/python -m lifeline.screenshot "$@"
