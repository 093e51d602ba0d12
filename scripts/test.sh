#!/usr/bin/env bash
# The whole test suite: set-up, lint, format check, type check, then unit, integration and e2e tests.
# Extra arguments go to pytest (e.g. scripts/test.sh -m unit).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --tests

export PATH="$PWD/.venv/bin:$PATH"
echo "[test] ruff check";        ruff check .
echo "[test] ruff format --check"; ruff format --check .
echo "[test] mypy";              mypy
echo "[test] pytest"
rc=0
# --durations: the slowest tests, so that the 15-minute budget of the whole suite stays visible
pytest --durations=25 "$@" || rc=$?
if [ "$rc" -eq 5 ]; then
  echo "[test] pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit "$rc"
