#!/usr/bin/env bash
# Installs everything the tests need, then runs every test (extra args go to pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --dev
exec python3 -m pytest -p no:cacheprovider "$@"
