"""The committed dashboard bundle is what web/ builds today, and it stays small.

The built assets ship inside the Python package (so installing needs no Node); this catches a
change to web/src that was committed without `npm run build`.
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path
from typing import Any

from marketpulse.dashboard import STATIC_DIR, static_dir

MAX_GZIP_BYTES = 200_000


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_committed_bundle_matches_a_fresh_build(node: Any, tmp_path: Path) -> None:
    assert static_dir() == STATIC_DIR
    out = tmp_path / "static"
    result = node.run("vite", "build", "--outDir", str(out), "--emptyOutDir", "--logLevel", "warn")
    assert result.returncode == 0, result.stdout + result.stderr
    fresh, committed = _files(out), _files(STATIC_DIR)
    assert sorted(fresh) == sorted(committed), "run `npm run build` in web/ and commit the result"
    changed = [name for name in fresh if fresh[name] != committed[name]]
    assert not changed, f"stale built files {changed}: run `npm run build` in web/"


def test_bundle_is_small() -> None:
    total = sum(len(gzip.compress(data)) for data in _files(STATIC_DIR).values())
    assert total < MAX_GZIP_BYTES, f"dashboard bundle is {total} bytes gzipped"
    index = (STATIC_DIR / "index.html").read_text()
    # The chart library loads on demand, not with the first page.
    assert "charts-" not in index


def test_no_hand_written_websocket_code() -> None:
    # The point of the design: the dashboard only calls convex/react; the official client owns
    # the socket, reconnection and the query set.
    src = STATIC_DIR.parents[3] / "web" / "src"
    socket = re.compile(r"new\s+(WebSocket|EventSource)\b|\bwebSocketConstructor\b")
    offenders = [
        str(p.relative_to(src)) for p in src.rglob("*.ts*") if socket.search(p.read_text())
    ]
    assert offenders == []
    uses = [p for p in src.rglob("*.tsx") if 'from "convex/react"' in p.read_text()]
    assert len(uses) >= 6
