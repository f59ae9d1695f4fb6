"""The ``ctx`` objects handed to functions, and the caller identity."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import orjson

from ..values import ConvexValueError, value_to_json
from ._database import DatabaseReader, DatabaseWriter

if TYPE_CHECKING:
    from ._scheduler import ActionScheduler, Scheduler

__all__ = ["ActionCtx", "Auth", "Identity", "LogCollector", "MutationCtx", "QueryCtx"]


@dataclass(frozen=True)
class Identity:
    """Who is calling: anonymous, admin (holds the admin key) or a user (token claims).

    Build with :meth:`anonymous`, :meth:`admin` or :meth:`for_user`.
    """

    kind: Literal["anonymous", "admin", "user"] = "anonymous"
    claims: Mapping[str, Any] | None = field(default=None, compare=False, hash=False)
    key: str = "anonymous"
    """A stable string identifying the caller for query sharing (part of the cache key)."""

    @classmethod
    def anonymous(cls) -> Identity:
        """No identity."""
        return _ANONYMOUS

    @classmethod
    def admin(cls) -> Identity:
        """A caller that presented the admin key."""
        return _ADMIN

    @classmethod
    def for_user(cls, claims: Mapping[str, Any]) -> Identity:
        """A user identified by token claims (``subject``/``issuer`` ... as a dict)."""
        key = "user:" + orjson.dumps(dict(claims), option=orjson.OPT_SORT_KEYS).decode()
        return cls("user", dict(claims), key)

    @property
    def is_admin(self) -> bool:
        """Whether internal functions may be called."""
        return self.kind == "admin"


_ANONYMOUS = Identity("anonymous", None, "anonymous")
_ADMIN = Identity("admin", None, "admin")


class Auth:
    """``ctx.auth``."""

    def __init__(self, identity: Identity) -> None:
        self._identity = identity

    def get_user_identity(self) -> dict[str, Any] | None:
        """The user's claims, or ``None`` for anonymous and admin callers."""
        if self._identity.kind != "user" or self._identity.claims is None:
            return None
        return dict(self._identity.claims)


def _format_arg(arg: Any) -> str:
    if isinstance(arg, str):
        return "'" + arg + "'"
    try:
        return orjson.dumps(value_to_json(arg)).decode()
    except (ConvexValueError, TypeError):
        return repr(arg)


class LogCollector:
    """Log lines of one function run, formatted as Convex clients expect (``[LOG] 'msg'``)."""

    def __init__(self, max_lines: int) -> None:
        self.lines: list[str] = []
        self._max = max_lines
        self._dropped = 0

    def add(self, level: str, args: tuple[Any, ...]) -> None:
        if len(self.lines) >= self._max:
            self._dropped += 1
            return
        text = " ".join(_format_arg(a) for a in args)
        if len(text) > 4096:
            text = text[:4093] + "..."
        self.lines.append(f"[{level}] {text}")

    def result(self) -> list[str]:
        """The lines, with a final note when some were dropped."""
        if self._dropped:
            return [*self.lines, f"[WARN] '{self._dropped} more log lines were dropped'"]
        return list(self.lines)


class _BaseCtx:
    def __init__(self, identity: Identity, logs: LogCollector) -> None:
        self.auth = Auth(identity)
        self.identity = identity
        self._logs = logs

    @property
    def is_admin(self) -> bool:
        """Whether the caller holds the admin key."""
        return self.identity.is_admin

    def log(self, *args: Any) -> None:
        """Like ``console.log``: the line reaches the client's console."""
        self._logs.add("LOG", args)

    def info(self, *args: Any) -> None:
        """Like ``console.info``."""
        self._logs.add("INFO", args)

    def warn(self, *args: Any) -> None:
        """Like ``console.warn``."""
        self._logs.add("WARN", args)

    def error(self, *args: Any) -> None:
        """Like ``console.error``."""
        self._logs.add("ERROR", args)


class QueryCtx(_BaseCtx):
    """The context of a query: ``ctx.db`` (read-only), ``ctx.auth``, ``ctx.log``."""

    db: DatabaseReader

    def __init__(self, db: DatabaseReader, identity: Identity, logs: LogCollector) -> None:
        super().__init__(identity, logs)
        self.db = db


class MutationCtx(QueryCtx):
    """The context of a mutation: ``ctx.db`` also writes; ``ctx.scheduler`` schedules
    functions, in the mutation's transaction (the engine sets it)."""

    db: DatabaseWriter
    scheduler: Scheduler

    def __init__(self, db: DatabaseWriter, identity: Identity, logs: LogCollector) -> None:
        super().__init__(db, identity, logs)
        self.db = db


Caller = Callable[[str, Any], Awaitable[Any]]


class ActionCtx(_BaseCtx):
    """The context of an action: call other functions (internal ones too) by path;
    ``ctx.scheduler`` schedules functions (async methods; the engine sets it)."""

    scheduler: ActionScheduler

    def __init__(
        self,
        identity: Identity,
        logs: LogCollector,
        run_query: Caller,
        run_mutation: Caller,
        run_action: Caller,
    ) -> None:
        super().__init__(identity, logs)
        self._run_query = run_query
        self._run_mutation = run_mutation
        self._run_action = run_action

    async def run_query(self, path: str, args: dict[str, Any] | None = None) -> Any:
        """Run a query at the latest state; returns its value or raises its error."""
        return await self._run_query(path, args or {})

    async def run_mutation(self, path: str, args: dict[str, Any] | None = None) -> Any:
        """Run a mutation (its own transaction); returns its value or raises its error."""
        return await self._run_mutation(path, args or {})

    async def run_action(self, path: str, args: dict[str, Any] | None = None) -> Any:
        """Run another action; returns its value or raises its error."""
        return await self._run_action(path, args or {})
