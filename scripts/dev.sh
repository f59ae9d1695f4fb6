#!/usr/bin/env bash
# Installs marketpulse and runs the whole system on embedded defaults
# (simulator feed, SQLite file, Temporal dev server). Extra args go to `marketpulse dev`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec marketpulse dev "$@"
