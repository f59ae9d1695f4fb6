"""The live dashboard, built from ``web/`` and shipped inside the package.

``npm run build`` in ``web/`` writes the bundle to ``static/`` here, and the built files are
committed, so a user who installs marketpulse needs no Node: ``marketpulse serve`` serves
:data:`STATIC_DIR` at ``/`` when it holds an ``index.html``.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["STATIC_DIR", "static_dir"]

STATIC_DIR: Path = Path(__file__).resolve().parent / "static"
"""The built dashboard: ``index.html`` and ``assets/``."""


def static_dir() -> Path | None:
    """Returns the built dashboard's directory, or None when it has not been built.

    Returns:
        :data:`STATIC_DIR` if it holds an ``index.html``, else None.
    """
    return STATIC_DIR if (STATIC_DIR / "index.html").is_file() else None
