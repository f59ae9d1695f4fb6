#!/usr/bin/env bash
# Installs everything the tests need, then runs every test (extra args go to pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --dev
# The PostgreSQL tests need a server at 127.0.0.1:5432 (user postgres, trust auth): use the one
# running, else start Debian's package (installed if missing).
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  if ! command -v pg_ctlcluster >/dev/null; then
    apt-get install -y -q postgresql >/dev/null
  fi
  version=$(ls /etc/postgresql | sort -V | tail -1)
  conf=/etc/postgresql/$version/main
  grep -q "^host all all 127.0.0.1/32 trust" "$conf/pg_hba.conf" ||
    sed -i '1i host all all 127.0.0.1/32 trust' "$conf/pg_hba.conf"
  pg_ctlcluster "$version" main start
  for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
exec python3 -m pytest -p no:cacheprovider "$@"
