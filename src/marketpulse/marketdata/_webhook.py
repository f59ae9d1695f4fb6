"""POST one JSON document to a webhook: the I/O of alert delivery, kept out of the functions."""

from __future__ import annotations

from typing import Any

import httpx

__all__ = ["TIMEOUT_S", "post_json"]

TIMEOUT_S = 5.0
"""Connect, write and read timeout of one delivery; a dead host costs at most this."""


async def post_json(url: str, body: dict[str, Any], *, timeout_s: float = TIMEOUT_S) -> str | None:
    """POST ``body`` to ``url``; None on a 2xx answer, else why it failed.

    The reason names the status or the error's type only, never the URL, which may carry a
    secret the user put in it.
    """
    try:
        async with httpx.AsyncClient(timeout=timeout_s, follow_redirects=False) as client:
            response = await client.post(url, json=body)
    except httpx.HTTPError as exc:
        return type(exc).__name__
    if 200 <= response.status_code < 300:
        return None
    return f"HTTP {response.status_code}"
