"""Shared test set-up.

The tests import ``marketpulse`` from this checkout's ``src`` (not whichever checkout was
installed in editable mode), and so do the subprocesses they start with
``python -m marketpulse``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

SRC = str(Path(__file__).resolve().parent.parent / "src")
if sys.path[0] != SRC:
    sys.path.insert(0, SRC)
os.environ["PYTHONPATH"] = os.pathsep.join(
    [SRC, *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != SRC]]
)
