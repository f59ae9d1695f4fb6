#!/usr/bin/env bash
# Installs marketpulse and what it needs on a fresh machine of this kind.
#   scripts/install.sh         the package (what `marketpulse dev` needs)
#   scripts/install.sh --dev   plus test tools, the npm test peers, HAProxy and Chromium
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
[ "${1:-}" = "--dev" ] && dev=1

log() { printf '\033[1m[install]\033[0m %s\n' "$*"; }

if [ -f web/package.json ] && [ ! -f src/marketpulse/dashboard/static/index.html ]; then
  log "building the dashboard (web/)"
  (cd web && npm ci --no-audit --no-fund --loglevel=error && npm run build --silent)
fi

if [ "$dev" = 1 ]; then
  log "pip install -e .[dev]"
  python3 -m pip install --quiet --disable-pip-version-check -e '.[dev]'
  if [ -f tests/js/package.json ]; then
    log "npm test peers (tests/js)"
    (cd tests/js && npm ci --no-audit --no-fund --loglevel=error)
  fi
  # Vitest, tsc and the codegen type checks run from web/node_modules; reinstalled only
  # when package-lock.json changed since the last install.
  if [ -f web/package.json ] && ! cmp -s web/package-lock.json web/node_modules/.installed-lock; then
    log "npm ci (web/)"
    (cd web && npm ci --no-audit --no-fund --loglevel=error && cp package-lock.json node_modules/.installed-lock)
  fi
  if ! command -v haproxy >/dev/null && [ ! -x /usr/sbin/haproxy ]; then
    log "apt-get install haproxy (the balancer: cluster tests, dev --store-nodes)"
    if [ "$(id -u)" = 0 ]; then
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy) >/dev/null
    else
      log "not root: skipping haproxy; the balancer tests will fail (sudo apt-get install haproxy)"
    fi
  fi
  if [ ! -x /usr/bin/chromium ]; then
    log "apt-get install chromium (browser tests)"
    if [ "$(id -u)" = 0 ]; then
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null
    else
      log "not root: skipping chromium; browser tests will be skipped"
    fi
  fi
else
  log "pip install -e ."
  python3 -m pip install --quiet --disable-pip-version-check -e .
fi
