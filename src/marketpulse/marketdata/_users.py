"""The signed-in user behind a public function of the app, and the errors users see."""

from __future__ import annotations

from typing import Any, NoReturn

from marketpulse.reactive import ActionCtx, ConvexError, QueryCtx

__all__ = ["not_found", "require_user"]


def require_user(ctx: QueryCtx | ActionCtx) -> str:
    """The caller's ``tokenIdentifier`` (``issuer|subject``), the key of all their data.

    Raises:
        ConvexError: ``{"code": "Unauthenticated"}`` for an anonymous (or admin) caller.
    """
    identity: dict[str, Any] | None = ctx.auth.get_user_identity()
    if identity is None:
        raise ConvexError({"code": "Unauthenticated", "message": "Sign in first"})
    return str(identity["tokenIdentifier"])


def not_found(what: str) -> NoReturn:
    """Refuse an id that is not the caller's: the same answer whether it exists or not."""
    raise ConvexError({"code": "NotFound", "message": f"{what} not found"})
