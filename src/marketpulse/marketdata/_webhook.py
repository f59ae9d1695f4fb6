"""POST one JSON document to a webhook, to hosts the operator allows: the I/O of alert delivery.

A user chooses their alert webhook's URL (``settings:setAlertWebhook``), and the store then
POSTs from inside the operator's network: without a limit, any user could make it reach any
internal service (server-side request forgery). The operator lists the hosts webhooks may
reach in ``MARKETPULSE_WEBHOOK_ALLOW`` (``serve --webhook-allow``), comma-separated:

* an IP address or network, e.g. ``10.1.2.3`` or ``192.168.0.0/16`` (IP literals in URLs);
* a host name, e.g. ``hooks.example.com``, or every name under a domain, ``*.example.com``;
* ``*``: any host (only where the store's network holds nothing to protect).

Unset, only loopback is allowed (``localhost``, ``127.0.0.0/8``, ``::1``): right for a
development machine. The URL is checked when the user sets it and again at each delivery (the
list may have narrowed since), and redirects are never followed, so an allowed host cannot
bounce the POST elsewhere. Names are matched as names: the operator vouches for what an allowed
name resolves to.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

__all__ = [
    "ALLOW_ENV",
    "DEFAULT_ALLOW",
    "TIMEOUT_S",
    "AllowList",
    "allow_list",
    "post_json",
    "well_formed",
]

TIMEOUT_S = 5.0
"""Connect, write and read timeout of one delivery; a dead host costs at most this."""

ALLOW_ENV = "MARKETPULSE_WEBHOOK_ALLOW"
"""The environment variable holding the operator's allow-list."""

DEFAULT_ALLOW = "localhost,127.0.0.0/8,::1"
"""The allow-list when none is configured: loopback only."""

NOT_ALLOWED = "webhook host not allowed"
"""A refused delivery's recorded reason."""

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_HOST = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")


@dataclass(frozen=True)
class AllowList:
    """Hosts alert webhooks may reach (see the module's docstring for the syntax).

    Raises:
        ValueError: an entry is neither an address, a network, a host name nor ``*``.
    """

    networks: tuple[_Network, ...]
    names: frozenset[str]
    domains: tuple[str, ...]
    any_host: bool = False

    @classmethod
    def parse(cls, text: str) -> AllowList:
        """Parse a comma-separated list."""
        networks: list[_Network] = []
        names: set[str] = set()
        domains: list[str] = []
        any_host = False
        for raw in text.split(","):
            entry = raw.strip().lower()
            if not entry:
                continue
            if entry == "*":
                any_host = True
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
                continue
            except ValueError:
                pass
            name = entry.removeprefix("*.")
            if not _HOST.match(name):
                raise ValueError(f"webhook allow-list: {raw.strip()!r} is not a host or network")
            if entry.startswith("*."):
                domains.append("." + name)
            else:
                names.add(name)
        return cls(tuple(networks), frozenset(names), tuple(domains), any_host)

    def allows(self, url: str) -> bool:
        """Whether ``url``'s host is allowed (False for a URL with no host)."""
        host = urlsplit(url).hostname
        if not host:
            return False
        if self.any_host:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            host = host.rstrip(".")
            return host in self.names or host.endswith(self.domains)
        return any(address in network for network in self.networks)


@functools.lru_cache(maxsize=8)
def _parsed(text: str) -> AllowList:
    return AllowList.parse(text)


def allow_list() -> AllowList:
    """The operator's allow-list now (read from :data:`ALLOW_ENV`; loopback when unset).

    Raises:
        ValueError: the configured list does not parse.
    """
    return _parsed(os.environ.get(ALLOW_ENV) or DEFAULT_ALLOW)


async def post_json(url: str, body: dict[str, Any], *, timeout_s: float = TIMEOUT_S) -> str | None:
    """POST ``body`` to ``url`` if its host is allowed; None on a 2xx answer, else why not.

    The reason names the refusal, the status or the error's type only, never the URL, which
    may carry a secret the user put in it. A redirect is an answer like any other: not followed.
    """
    if not allow_list().allows(url):
        return NOT_ALLOWED
    try:
        async with httpx.AsyncClient(timeout=timeout_s, follow_redirects=False) as client:
            response = await client.post(url, json=body)
    except Exception as exc:
        # Any failure is this delivery's outcome, to record and retry: besides httpx's own
        # errors, a URL stored before its checks were this strict can fail below httpx (an
        # out-of-range port raised an ExceptionGroup), and an action that raised recorded
        # nothing, leaving its alert pending for good.
        return type(exc).__name__
    if 200 <= response.status_code < 300:
        return None
    return f"HTTP {response.status_code}"


def well_formed(url: str) -> bool:
    """Whether ``url`` is an http(s) URL with a host and a valid port, as httpx reads it."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError on a port that is not 0..65535)
        parsed = httpx.URL(url)
    except (ValueError, httpx.InvalidURL):
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and bool(parsed.host)
