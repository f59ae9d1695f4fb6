"""The ``settings`` functions module: each signed-in user's preferences (the alert webhook)."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import Field

from marketpulse.marketdata import _alerts, _webhook
from marketpulse.marketdata._users import require_user
from marketpulse.reactive import ConvexError, FunctionModule, MutationCtx, QueryCtx, Schema

__all__ = ["schema", "settings"]

schema = Schema({"userSettings": _alerts.TABLES["userSettings"]})
settings = FunctionModule("settings", schema=schema)

MAX_URL = 2048

_webhook.allow_list()  # a malformed operator list stops the server as it loads, not a user later


def _settings_doc(ctx: QueryCtx, user: str) -> dict[str, Any] | None:
    doc: dict[str, Any] | None = (
        ctx.db.query("userSettings").with_index("by_user", lambda q: q.eq("user", user)).first()
    )
    return doc


def _check_url(url: str) -> None:
    if not _webhook.well_formed(url):
        raise ConvexError(
            {
                "code": "InvalidWebhook",
                "message": "the webhook must be an http(s) URL with a host and a valid port",
            }
        )
    parts = urlsplit(url)
    if not _webhook.allow_list().allows(url):
        raise ConvexError(
            {
                "code": "WebhookNotAllowed",
                "message": f"webhooks may not reach {parts.hostname}: the store's operator "
                f"allows only the hosts in {_webhook.ALLOW_ENV}",
            }
        )


@settings.query
def get(ctx: QueryCtx) -> dict[str, Any]:
    """The signed-in user's settings: ``{alertWebhook}`` (null when unset)."""
    return {"alertWebhook": _alerts.webhook_of(ctx.db, require_user(ctx))}


@settings.mutation
def setAlertWebhook(
    ctx: MutationCtx, url: Annotated[str, Field(max_length=MAX_URL)] | None
) -> None:
    """Where fired alerts are POSTed (JSON); null stops deliveries not yet made."""
    user = require_user(ctx)
    if url is not None:
        _check_url(url)
    doc = _settings_doc(ctx, user)
    if doc is None:
        ctx.db.insert("userSettings", {"user": user, "alertWebhook": url})
    else:
        ctx.db.patch(doc["_id"], {"alertWebhook": url})
