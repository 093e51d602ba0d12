#!/usr/bin/env bash
# Idempotent set-up on a fresh Debian machine: system packages, then .venv with Lifeline installed.
# Safe to run any number of times; it only does what is missing.
#   scripts/setup.sh            what the demo needs
#   scripts/setup.sh --tests    also what the test suite needs (PostgreSQL, headless Chromium,
#                               a CJK font, faketime, nats-server, Node.js with the TimescaleDB
#                               test engine in tests/tsdb)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup] %s\n' "$*"; }

python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "Lifeline needs Python >= 3.11 as python3" >&2; exit 1; }

for_tests=0
[ "${1:-}" = "--tests" ] && for_tests=1

missing=()
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
if [ "$for_tests" = 1 ]; then
  if ! command -v pg_ctl >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
    missing+=(postgresql)
  fi
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
  # a CJK font, so the console's Chinese labels render (and measure) in the browser tests
  fc-list 2>/dev/null | grep -qi 'cjk' || missing+=(fonts-noto-cjk)
  command -v node >/dev/null 2>&1 || missing+=(nodejs)
  command -v npm >/dev/null 2>&1 || missing+=(npm)
  # libfaketime: the clock-step tests and the soak give a gateway process its own wall clock
  command -v faketime >/dev/null 2>&1 || missing+=(faketime)
  # NATS (JetStream + MQTT 3.1.1): the broker cluster the failover tests kill nodes of
  command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || missing+=(nats-server)
fi

if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  log "installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  python3 -m venv .venv
fi

# Reinstall only when the dependency list changed since the last install.
stamp=.venv/.lifeline-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  log "installing lifeline and its dependencies into .venv"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e '.[dev]'
  echo "$want" > "$stamp"
fi

# The TimescaleDB engine the tests run against (PGlite + TimescaleDB from npm, see tests/tsdb):
# installed again only when package-lock.json is newer than npm's record of the last install.
if [ "$for_tests" = 1 ]; then
  installed=tests/tsdb/node_modules/.package-lock.json
  if [ ! -f "$installed" ] || [ tests/tsdb/package-lock.json -nt "$installed" ]; then
    log "installing the TimescaleDB test engine (npm ci in tests/tsdb)"
    (cd tests/tsdb && npm ci --no-audit --no-fund)
  fi
fi
log "ready: .venv/bin/lifeline"
