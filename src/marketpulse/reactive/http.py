"""The Convex HTTP API: what ConvexHttpClient (npm) and convex.http_client (PyPI) call.

Function errors are HTTP 200 with ``{"status": "error", ...}`` (the Python client raises on any
4xx/5xx before reading the body); malformed requests are 4xx with ``{"code", "message"}``.
"""

from __future__ import annotations

import base64
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import structlog
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from marketpulse.reactive.access import AccessDenied
from marketpulse.reactive.admission import THROTTLE
from marketpulse.reactive.gateway import Gateway
from marketpulse.reactive.limits import JsonTooDeep, check_json_depth
from marketpulse.reactive.values import (
    ConvexValueError,
    Int64,
    decode_ts,
    encode_ts,
    json_to_value,
    value_to_json,
)

__all__ = ["http_routes"]

log = structlog.get_logger("marketpulse.http")

_ENCODED_FORMATS = frozenset({"convex_encoded_json", "convex_json"})
_CLEAN_FORMATS = frozenset({"json", "convex_clean_json"})
_KINDS = frozenset({"query", "mutation", "action"})
# Levels of a body around its args object ({"queries": [{"args": {...}}]}).
_ENVELOPE_DEPTH = 3


class BadRequest(Exception):
    """A malformed request: 4xx with a code and a message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _clean(value: Any) -> Any:
    """The lossy "json" format: int64 as a decimal string, bytes as base64, NaN as "NaN"."""
    if isinstance(value, Int64):
        return str(int(value))
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


def _encode(value: Any, fmt: str) -> Any:
    return _clean(value) if fmt in _CLEAN_FORMATS else value_to_json(value)


def udf_response(result: Any, fmt: str = "convex_encoded_json") -> dict[str, Any]:
    """The UdfResponse body for a function result."""
    body: dict[str, Any]
    if result.success:
        encoded = getattr(result, "encoded_json", None)
        if fmt in _ENCODED_FORMATS and isinstance(encoded, bytes):
            body = {"status": "success", "value": orjson.Fragment(encoded)}
        else:
            body = {"status": "success", "value": _encode(result.value, fmt)}
    else:
        body = {"status": "error", "errorMessage": result.error_message or "Server Error"}
        # errorData only for ConvexError: clients treat its mere presence as a ConvexError.
        if getattr(result, "has_error_data", False):
            body["errorData"] = _encode(result.error_data, fmt)
    if result.log_lines:
        body["logLines"] = list(result.log_lines)
    return body


def _format(raw: object, default: str) -> str:
    if raw is None:
        return default
    if not isinstance(raw, str) or raw not in _ENCODED_FORMATS | _CLEAN_FORMATS:
        raise BadRequest(400, "BadFormat", f"Unsupported format {raw!r}")
    return raw


def _args(raw: object) -> dict[str, Any]:
    # Clients send [ {args} ]; the Python HTTP client and curl users send a bare object.
    if raw is None:
        raw = {}
    if isinstance(raw, list):
        if len(raw) != 1:
            raise BadRequest(400, "BadArgs", "args must be an object or an array of one object")
        raw = raw[0]
    if not isinstance(raw, dict):
        raise BadRequest(400, "BadArgs", "args must be an object or an array of one object")
    try:
        value = json_to_value(raw)
    except ConvexValueError as exc:
        raise BadRequest(400, "BadArgs", f"Invalid Convex value in args: {exc}") from None
    assert isinstance(value, dict)
    return value


def _path(raw: object) -> str:
    if not isinstance(raw, str) or not raw:
        raise BadRequest(400, "BadPath", "'path' must be a non-empty string")
    return raw


def _within_depth(value: object, max_depth: int) -> None:
    try:
        check_json_depth(value, max_depth + _ENVELOPE_DEPTH)
    except JsonTooDeep:
        raise BadRequest(
            400, "JsonTooDeep", f"arguments nest deeper than {max_depth} levels"
        ) from None


async def _body(request: Request, max_depth: int | None) -> dict[str, Any]:
    # The body arrives already bounded in size and time (server._BoundedBody).
    raw = await request.body()
    if not raw:
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(400, "BadJsonBody", f"Request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest(400, "BadJsonBody", "Request body must be a JSON object")
    if max_depth is not None:
        _within_depth(body, max_depth)
    return body


def _ts_too_old() -> BadRequest:
    return BadRequest(
        400,
        "QueryTsTooOld",
        "This store only answers at its latest timestamp; data changed since the "
        "requested ts. Fetch a new ts with /api/query_ts and retry.",
    )


def _client(request: Request) -> str:
    return request.client.host if request.client is not None else "?"


class _Api:
    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway
        self.depth = gateway.limits.max_json_depth

    async def _body(self, request: Request) -> dict[str, Any]:
        return await _body(request, self.depth)

    async def _queries(self, client: str, calls: list[tuple[str, Any]], identity: Any) -> list[Any]:
        """Run one-shot queries in this client's fair turn (:class:`QueryShare`), charged to
        it; slow ones run off the event loop (``Engine.run_queries``)."""
        share = self.gw.query_share
        await share.turn(client)
        start = time.perf_counter()
        spent: float | None = None
        try:
            results, spent = await self.gw.engine.run_queries(calls, identity)
            return results
        finally:
            share.charge(client, time.perf_counter() - start if spent is None else spent)

    async def _identity(self, request: Request) -> Any:
        try:
            caller = await self.gw.auth.http(request.headers.get("authorization"))
        except AccessDenied as exc:
            raise BadRequest(401, "Unauthenticated", str(exc)) from None
        return self.gw.identity_of(caller)

    async def _run(
        self, kind: str, path: str, args: dict[str, Any], identity: Any, client: str
    ) -> Any:
        engine = self.gw.engine
        if kind == "query":
            return (await self._queries(client, [(path, args)], identity))[0]
        if kind == "mutation":
            result = await engine.run_mutation(path, args, identity)
            if result.success:
                self.gw.metrics.commits.inc()
            return result
        return await engine.run_action(path, args, identity)

    def _kind_of(self, path: str) -> str:
        kind = self.gw.function_kind(path)
        # Unknown paths still go to the engine so the caller gets its standard
        # "Could not find public function" error.
        return kind if kind in _KINDS else "query"

    def endpoint(
        self, handler: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def wrapped(request: Request) -> Response:
            try:
                return await handler(request)
            except BadRequest as exc:
                return _json({"code": exc.code, "message": exc.message}, exc.status)
            except Exception as exc:
                # Throttled, one line, no traceback: a hostile request must not fill the log.
                THROTTLE.log(
                    log, "error", "http request failed", path=request.url.path[:200],
                    error=repr(exc)[:300],
                )  # fmt: skip
                return _json(
                    {"code": "InternalServerError", "message": "Internal server error"}, 500
                )

        return wrapped

    def for_kind(self, kind: str | None) -> Callable[[Request], Awaitable[Response]]:
        async def handler(request: Request) -> Response:
            body = await self._body(request)
            identity = await self._identity(request)
            path = _path(body.get("path"))
            fmt = _format(body.get("format"), "convex_encoded_json")
            args = _args(body.get("args"))
            result = await self._run(
                kind or self._kind_of(path), path, args, identity, _client(request)
            )
            return _json(udf_response(result, fmt))

        return self.endpoint(handler)

    async def run_path(self, request: Request) -> Response:
        body = await self._body(request)
        identity = await self._identity(request)
        parts = request.path_params["path"].strip("/").split("/")
        if not parts or not all(parts):
            raise BadRequest(400, "BadPath", "Expected /api/run/<module path>/<function>")
        path = "/".join(parts[:-1]) + ":" + parts[-1] if len(parts) > 1 else parts[0]
        fmt = _format(body.get("format"), "json")
        result = await self._run(
            self._kind_of(path), path, _args(body.get("args")), identity, _client(request)
        )
        return _json(udf_response(result, fmt))

    async def get_query(self, request: Request) -> Response:
        identity = await self._identity(request)
        params = request.query_params
        path = _path(params.get("path"))
        fmt = _format(params.get("format"), "convex_encoded_json")
        raw_args: object = {}
        if "args" in params:
            try:
                raw_args = orjson.loads(params["args"])
            except orjson.JSONDecodeError:
                raise BadRequest(400, "BadArgs", "'args' must be JSON") from None
            _within_depth(raw_args, self.depth)
        result = await self._run("query", path, _args(raw_args), identity, _client(request))
        return _json(udf_response(result, fmt))

    async def query_ts(self, request: Request) -> Response:
        await self._identity(request)
        return _json({"ts": encode_ts(self.gw.engine.ts)})

    async def query_at_ts(self, request: Request) -> Response:
        body = await self._body(request)
        identity = await self._identity(request)
        raw_ts = body.get("ts")
        try:
            ts = decode_ts(raw_ts) if isinstance(raw_ts, str) else None
        except (ValueError, ConvexValueError):
            ts = None
        if ts is None:
            raise BadRequest(400, "BadTimestamp", "'ts' must be an encoded u64 timestamp")
        path = _path(body.get("path"))
        fmt = _format(body.get("format"), "convex_encoded_json")
        args = _args(body.get("args"))
        if ts < self.gw.engine.ts:
            # The store keeps only the latest snapshot; older reads would need MVCC history.
            raise _ts_too_old()
        result = await self._run("query", path, args, identity, _client(request))
        if result.ts > ts:
            # A commit landed after the check, before the snapshot the query ran on (while it
            # waited for its turn, or ran off the loop): the result is not the state at ts.
            raise _ts_too_old()
        return _json(udf_response(result, fmt))

    def _too_many(self, count: int, what: str) -> BadRequest:
        self.gw.metrics.refused.labels("batch").inc()
        return BadRequest(
            400,
            "TooManyQueries",
            f"{count} {what} exceed the limit of {self.gw.limits.max_batch_queries} queries",
        )

    async def query_batch(self, request: Request) -> Response:
        limit = self.gw.limits.max_batch_queries
        # Counted before parsing: parsing a 100,000-query body (4.6 MB) held the loop 0.15-0.5
        # s. Every query names its "path", so the count of that JSON string bounds the length
        # from above at C speed (~1 ms per MB); a batch whose arguments use the string "path"
        # too is counted with them (documented, and the message says so).
        raw = await request.body()
        if limit > 0 and (paths := raw.count(b'"path"')) > limit:
            raise self._too_many(paths, 'queries ("path" strings in the body)')
        body = await _body(request, None)
        identity = await self._identity(request)
        queries = body.get("queries")
        if not isinstance(queries, list):
            raise BadRequest(400, "BadJsonBody", "'queries' must be an array")
        if 0 < limit < len(queries):
            raise self._too_many(len(queries), "queries")
        _within_depth(body, self.depth)
        parsed = []
        for item in queries:
            if not isinstance(item, dict):
                raise BadRequest(400, "BadJsonBody", "each query must be an object")
            parsed.append(
                (
                    _path(item.get("path")),
                    _args(item.get("args")),
                    _format(item.get("format"), "convex_encoded_json"),
                )
            )
        # Every result is exact at one ts (the batch is bounded, and waits for its client's
        # fair turn before it starts).
        results = await self._queries(
            _client(request), [(path, args) for path, args, _ in parsed], identity
        )
        return _json(
            {
                "results": [
                    udf_response(r, fmt) for r, (_, _, fmt) in zip(results, parsed, strict=True)
                ]
            }
        )


def http_routes(gateway: Gateway) -> list[Route]:
    """The HTTP API routes for one gateway."""
    api = _Api(gateway)
    post = ["POST"]
    return [
        Route("/api/query", api.for_kind("query"), methods=post),
        Route("/api/query", api.endpoint(api.get_query), methods=["GET"]),
        Route("/api/mutation", api.for_kind("mutation"), methods=post),
        Route("/api/action", api.for_kind("action"), methods=post),
        Route("/api/function", api.for_kind(None), methods=post),
        Route("/api/query_ts", api.endpoint(api.query_ts), methods=post),
        Route("/api/query_at_ts", api.endpoint(api.query_at_ts), methods=post),
        Route("/api/query_batch", api.endpoint(api.query_batch), methods=post),
        Route("/api/run/{path:path}", api.endpoint(api.run_path), methods=post),
    ]
