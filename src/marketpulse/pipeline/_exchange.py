"""Where the feed comes from: ``sim`` | ``demo`` | ``prod`` | a base URL.

Kalshi serves REST under ``/trade-api/v2`` and WebSocket v2 at ``/trade-api/ws/v2`` (docs/protocols/kalshi.md §1.1);
the simulator uses the same paths on one port, so a bare ``http://host:port`` is enough.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

__all__ = ["DEFAULT_SIM_URL", "Exchange", "resolve_exchange"]

DEFAULT_SIM_URL = "http://127.0.0.1:8765"
"""Where ``--exchange sim`` looks unless ``MARKETPULSE_SIM_URL`` says otherwise."""

_KALSHI = {
    "prod": (
        "https://external-api.kalshi.com/trade-api/v2",
        "wss://external-api-ws.kalshi.com/trade-api/ws/v2",
    ),
    "demo": (
        "https://external-api.demo.kalshi.co/trade-api/v2",
        "wss://external-api-ws.demo.kalshi.co/trade-api/ws/v2",
    ),
}
_REST_PATH = "/trade-api/v2"
_WS_PATH = "/trade-api/ws/v2"


@dataclass(frozen=True)
class Exchange:
    """Resolved endpoints of one exchange.

    Attributes:
        name: ``sim``, ``demo``, ``prod`` or ``url``.
        rest_url: REST v2 base (``.../trade-api/v2``).
        ws_url: WebSocket v2 URL.
    """

    name: str
    rest_url: str
    ws_url: str


def resolve_exchange(spec: str, *, sim_url: str | None = None) -> Exchange:
    """Turn ``sim`` | ``demo`` | ``prod`` | URL into endpoints.

    Args:
        spec: The exchange option.
        sim_url: Base URL of the simulator for ``sim`` (default: ``MARKETPULSE_SIM_URL`` or
            :data:`DEFAULT_SIM_URL`).

    Raises:
        ValueError: ``spec`` is neither a known name nor an http(s)/ws(s) URL.
    """
    spec = (spec or "sim").strip()
    if spec in _KALSHI:
        rest, ws = _KALSHI[spec]
        return Exchange(spec, rest, ws)
    name = "url"
    if spec == "sim":
        name = "sim"
        spec = sim_url or os.environ.get("MARKETPULSE_SIM_URL") or DEFAULT_SIM_URL
    parts = urlsplit(spec)
    if parts.scheme not in ("http", "https", "ws", "wss") or not parts.netloc:
        raise ValueError(f"exchange must be sim, demo, prod or an http(s) URL, got {spec!r}")
    secure = parts.scheme in ("https", "wss")
    path = parts.path.rstrip("/")
    for suffix in (_REST_PATH, _WS_PATH):
        if path.endswith(suffix):
            path = path[: -len(suffix)]
    rest = urlunsplit(("https" if secure else "http", parts.netloc, path + _REST_PATH, "", ""))
    ws = urlunsplit(("wss" if secure else "ws", parts.netloc, path + _WS_PATH, "", ""))
    return Exchange(name, rest, ws)
