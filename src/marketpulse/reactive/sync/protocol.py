"""Sans-I/O core of one client connection of the Convex sync protocol.

The protocol object knows nothing about sockets, clocks or the engine. Messages go in through
:meth:`SyncProtocol.receive_data`, and what the client asked for comes out, as typed
:data:`ClientEvent` objects, from :meth:`SyncProtocol.events_received`. The driver answers
through inputs (``send_mutation_response``, ``send_transition``, ``accept_auth``, ...) that
queue frames, and sends them as :meth:`SyncProtocol.data_to_send` returns them. Every invariant
of the spec (docs/protocols/convex-sync.md §3 and §10) is enforced here so that it can be tested
by feeding messages, with no server running:

* the Transition chain is continuous, starting at ``{0, 0, ts 0}``;
* ``endVersion`` never exceeds what the client has sent, and ``ts`` never decreases;
* every MutationResponse is followed by a Transition (see :attr:`SyncProtocol.transition_due`);
* every accepted Authenticate produces an identity-bumping Transition;
* ``errorData`` appears only for ConvexError failures; ``journal`` is always present (``null``
  unless the query paginated).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeAlias, cast

import orjson

from marketpulse.reactive.limits import ConnectionLimits, JsonTooDeep, check_json_depth
from marketpulse.reactive.values import (
    ConvexValueError,
    JSONValue,
    decode_ts,
    encode_ts,
    json_to_value,
    value_to_json,
)

__all__ = [
    "ActionRequested",
    "AuthenticateRequested",
    "ClientEvent",
    "Connected",
    "FunctionOutcome",
    "MutationRequested",
    "ProtocolError",
    "QueryAdded",
    "QueryRemoved",
    "SharedTransitions",
    "StateVersion",
    "SyncProtocol",
    "failed_outcome",
]

_U32_MAX = 2**32 - 1
# Levels of a message around its ``args`` object ({"modifications": [{"args": [{...}]}]}):
# max_json_depth counts from the args object, as the HTTP API's does.
_ENVELOPE_DEPTH = 3


class FunctionOutcome(Protocol):
    """What the protocol needs from a function result (the engine's ``FunctionResult``)."""

    @property
    def success(self) -> bool: ...
    @property
    def value(self) -> Any: ...
    @property
    def error_message(self) -> str | None: ...
    @property
    def error_data(self) -> Any: ...
    @property
    def log_lines(self) -> list[str]: ...


@dataclass(frozen=True)
class _Failed:
    success: bool
    value: Any
    error_message: str | None
    error_data: Any
    log_lines: list[str]


_NO_ERROR_DATA: Any = None


def failed_outcome(message: str) -> FunctionOutcome:
    """A plain (non-ConvexError) failure, for requests that never reach the engine."""
    return _Failed(False, None, message, _NO_ERROR_DATA, [])


class ProtocolError(Exception):
    """How the client broke the protocol (:attr:`SyncProtocol.protocol_error`)."""


@dataclass(frozen=True, order=True, slots=True)
class StateVersion:
    """A point in a connection's Transition chain."""

    query_set: int = 0
    identity: int = 0
    ts: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"querySet": self.query_set, "identity": self.identity, "ts": encode_ts(self.ts)}


@dataclass(frozen=True)
class Connected:
    """A ``Connect`` message: the start of a (re)connection."""

    session_id: str
    connection_count: int
    last_close_reason: str | None
    max_observed_ts: int | None
    client_ts: float | None


class QueryAdded:
    """A query added by ``ModifyQuerySet``; ``args_error`` is set when the args are unusable.

    The core decodes the arguments when they are first read (:attr:`args`,
    :attr:`args_error`), not while it validates the message: a 2,000-query set's decoding is
    then done by the driver in its paced first runs, a slice per loop turn, instead of all in
    the callback that received the message (~60 % of its ~13 ms).
    """

    __slots__ = ("_args", "_error", "_raw", "journal", "query_id", "udf_path")

    def __init__(
        self,
        query_id: int,
        udf_path: str,
        args: dict[str, Any],
        journal: str | None,
        args_error: str | None = None,
    ) -> None:
        self.query_id = query_id
        self.udf_path = udf_path
        self.journal = journal
        self._args: dict[str, Any] | None = args
        self._error = args_error
        self._raw: object = None

    @classmethod
    def encoded(cls, query_id: int, udf_path: str, raw: object, journal: str | None) -> QueryAdded:
        """An added query whose ``args`` are still as received (decoded on first use)."""
        event = cls.__new__(cls)
        event.query_id = query_id
        event.udf_path = udf_path
        event.journal = journal
        event._args = None
        event._error = None
        event._raw = raw
        return event

    def _decode(self) -> dict[str, Any]:
        args = self._args
        if args is None:
            args, self._error = _args(self._raw)
            self._args, self._raw = args, None
        return args

    @property
    def args(self) -> dict[str, Any]:
        """The decoded arguments (``{}`` when they are unusable)."""
        return self._decode()

    @property
    def args_error(self) -> str | None:
        """Why the arguments are unusable, if they are."""
        self._decode()
        return self._error

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, QueryAdded):
            return NotImplemented
        return (self.query_id, self.udf_path, self.args, self.journal, self.args_error) == (
            other.query_id,
            other.udf_path,
            other.args,
            other.journal,
            other.args_error,
        )

    __hash__ = None  # type: ignore[assignment]  # mutable (decoded lazily), as dataclass eq

    def __repr__(self) -> str:
        return (
            f"QueryAdded(query_id={self.query_id!r}, udf_path={self.udf_path!r}, "
            f"args={self.args!r}, journal={self.journal!r}, args_error={self.args_error!r})"
        )


@dataclass(frozen=True)
class QueryRemoved:
    """A query removed by ``ModifyQuerySet``."""

    query_id: int


@dataclass(frozen=True)
class MutationRequested:
    """A ``Mutation`` message; answer it with :meth:`SyncProtocol.send_mutation_response`."""

    request_id: int
    udf_path: str
    args: dict[str, Any]
    args_error: str | None = None
    args_json: bytes | None = field(default=None, compare=False, repr=False)
    """The arguments as received, re-serialized with sorted keys: what a re-send must repeat
    (``SyncConnection``'s replay check), without encoding the decoded value back."""


@dataclass(frozen=True)
class ActionRequested:
    """An ``Action`` message; answer it with :meth:`SyncProtocol.send_action_response`."""

    request_id: int
    udf_path: str
    args: dict[str, Any]
    args_error: str | None = None


@dataclass(frozen=True)
class AuthenticateRequested:
    """An ``Authenticate`` message whose ``baseVersion`` is valid.

    Answer it with :meth:`SyncProtocol.accept_auth` or :meth:`SyncProtocol.reject_auth`.
    """

    base_version: int
    token_type: Literal["Admin", "User", "None"]
    value: str | None
    acting_as: dict[str, Any] | None = None


ClientEvent: TypeAlias = (
    Connected
    | QueryAdded
    | QueryRemoved
    | MutationRequested
    | ActionRequested
    | AuthenticateRequested
)


@dataclass(slots=True)
class _Query:
    udf_path: str
    journal: str | None
    args_bytes: int = 0
    last_sent: FunctionOutcome | None = None


def _json_bytes(value: object) -> int:
    """The size of ``value`` (parsed from the client's JSON) written as JSON again."""
    try:
        return len(orjson.dumps(value))
    except orjson.JSONEncodeError:  # past orjson's depth; refused later as JsonTooDeep anyway
        return 0


def _int(message: Mapping[str, Any], key: str) -> int:
    value = message.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError(f"{message.get('type')}: '{key}' must be a non-negative integer")
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise ProtocolError(f"{message.get('type')}: '{key}' must be an integer")
        value = int(value)
    if not 0 <= value <= _U32_MAX:
        raise ProtocolError(f"{message.get('type')}: '{key}' out of range")
    return value


def _str(message: Mapping[str, Any], key: str) -> str:
    value = message.get(key)
    if not isinstance(value, str):
        raise ProtocolError(f"{message.get('type')}: '{key}' must be a string")
    return value


_SCAN_ALL_BELOW = 256 * 1024
"""Below this size a message's "queryId" strings are counted in one C pass (``count``)."""


def too_many_query_changes(data: str | bytes | bytearray, limit: int) -> str | None:
    """The ``TooManyQueries`` error of a ``ModifyQuerySet`` text (``str``, or its UTF-8 bytes
    before decoding) with more than ``limit`` modifications (0: no limit), else ``None``.

    Counted before parsing: parsing 75,000 modifications (6 MB) held the loop 0.15-0.3 s. Every
    modification names its "queryId", so the count of that JSON string bounds their number
    from above at C speed (arguments that use the string count too; the error says what was
    counted). A large message is only scanned until the count passes the limit: a 6 MB one is
    refused after its first ~170 KB instead of a whole scan (and of decoding it first).
    """
    if limit <= 0:
        return None
    if isinstance(data, str):
        if '"ModifyQuerySet"' not in data:
            return None
        ids = _count(data, '"queryId"', limit)
    else:
        if b'"ModifyQuerySet"' not in data:
            return None
        ids = _count(data, b'"queryId"', limit)
    if ids <= limit:
        return None
    more = "" if len(data) < _SCAN_ALL_BELOW else "over "
    return (
        f'TooManyQueries: {more}{ids - (1 if more else 0)} modifications ("queryId" strings) '
        f"in one ModifyQuerySet exceed the limit of {limit}"
    )


def _count(data: Any, needle: Any, limit: int) -> int:
    """``needle``'s occurrences in ``data``; in a large ``data``, no further than ``limit + 1``."""
    if len(data) < _SCAN_ALL_BELOW:
        return int(data.count(needle))
    ids, at = 0, data.find(needle)
    while at >= 0 and ids <= limit:
        ids += 1
        at = data.find(needle, at + len(needle))
    return ids


def _args(raw: object) -> tuple[dict[str, Any], str | None]:
    """Decode ``args`` (an array holding one encoded object); errors become function errors."""
    if not (isinstance(raw, list) and len(raw) == 1 and isinstance(raw[0], dict)):
        return {}, "ArgumentValidationError: args must be an array holding exactly one object"
    try:
        decoded = json_to_value(raw[0])
    except ConvexValueError as exc:
        return {}, f"ArgumentValidationError: {exc}"
    return decoded, None


SharedTransitions = dict[Any, tuple[StateVersion, bytes]]
"""One fan-out's encoded Transitions, for :meth:`SyncProtocol.send_transition`'s ``shared``:
sockets whose next Transition would be byte-identical send one encoding and share its end
version."""


def _dumps(message: Mapping[str, Any]) -> bytes:
    return orjson.dumps(message)


def _value_fragment(outcome: FunctionOutcome) -> Any:
    # The engine serialises each shared result once (``encoded_json``); splice those bytes
    # into every socket's Transition instead of re-encoding per socket.
    encoded = getattr(outcome, "encoded_json", None)
    if isinstance(encoded, bytes):
        return orjson.Fragment(encoded)
    return value_to_json(outcome.value)


def _same(a: FunctionOutcome, b: FunctionOutcome) -> bool:
    if a is b:
        return True
    same_outcome = getattr(a, "same_outcome", None)
    if same_outcome is not None and type(a) is type(b):
        return bool(same_outcome(b))
    if a.success != b.success or list(a.log_lines) != list(b.log_lines):
        return False
    if not a.success:
        return a.error_message == b.error_message and _error_data(a) == _error_data(b)
    return orjson.dumps(_value_fragment(a)) == orjson.dumps(_value_fragment(b))


def _error_data(outcome: FunctionOutcome) -> tuple[bool, JSONValue]:
    """(is_convex_error, encoded data): errorData goes out only for ConvexError failures.

    Even ``errorData: null`` makes both clients build a ConvexError, so a plain error must
    omit the field entirely.
    """
    flag = getattr(outcome, "has_error_data", None)
    has_data = bool(flag) if flag is not None else outcome.error_data is not None
    if not has_data:
        return False, None
    encoded = getattr(outcome, "encoded_error_data", None)
    return True, encoded if encoded is not None else value_to_json(outcome.error_data)


def _outcome_fields(outcome: FunctionOutcome) -> dict[str, Any]:
    if outcome.success:
        return {"success": True, "result": _value_fragment(outcome)}
    fields: dict[str, Any] = {"success": False, "result": outcome.error_message or "Server Error"}
    has_data, data = _error_data(outcome)
    if has_data:
        fields["errorData"] = data
    return fields


_PING = b'{"type":"Ping"}'


@dataclass(slots=True)
class SyncProtocol:
    """One client connection's side of the sync protocol (docs/protocols/convex-sync.md §3.2).

    A new one for every socket. It never does I/O, reads no clock and starts no task: messages
    go in through :meth:`receive_data`, the driver's answers through the ``send_*`` and
    ``*_auth`` inputs, time through :meth:`tick`; frames come out of :meth:`data_to_send` and
    client requests out of :meth:`events_received`.

    Driver's duties:
        * Pass every complete WebSocket message to :meth:`receive_data`; act on each event of
          :meth:`events_received` in order (subscribe, unsubscribe, run the mutation or action,
          check the credentials) and answer each request with its input.
        * Call :meth:`send_transition` with the latest results after they change, and whenever
          :attr:`transition_due` is true (after every response and accepted Authenticate).
        * After every input, send each frame of :meth:`data_to_send` as one text frame, in
          order, before anything else the connection writes.
        * Call :meth:`tick` about once a second while the socket can take writes.
        * When :meth:`close_expected` turns true, send the last frames and close the socket;
          call :meth:`connection_lost` when the socket is gone for any reason.

    Attributes:
        max_message_bytes: a bigger client message is a ``MessageTooLarge`` FatalError.
        max_queries: a ``ModifyQuerySet`` that would grow the set past this is a
            ``TooManyQueries`` FatalError (0: no limit).
        max_query_changes: a ``ModifyQuerySet`` with more modifications is a
            ``TooManyQueries`` FatalError (0: no limit).
        max_query_set_bytes: a ``ModifyQuerySet`` that would grow the query set's arguments
            (as JSON, all queries together) past this is a ``QuerySetTooLarge`` FatalError
            (0: no limit).
        max_json_depth: a message whose arguments nest deeper is a ``JsonTooDeep``
            FatalError.
        ping_interval_s: a socket quiet for this long gets a Ping (see :meth:`tick`).
        max_transition_bytes: bigger Transitions are split (the Python client drops frames over
            16 MiB and cannot take TransitionChunk): the first carries the version step, the
            rest go from end to end.
        received_query_set: the query-set version the client has sent.
        received_identity: the identity version the client has sent.
        sent_version: where the Transition chain sent so far ends.
        session_id: the client's session, from ``Connect``.
        protocol_error: how the client broke the protocol, once it has.
    """

    max_message_bytes: int = ConnectionLimits.max_message_bytes
    ping_interval_s: float = ConnectionLimits.ping_interval_s
    max_queries: int = ConnectionLimits.max_queries
    max_query_changes: int = ConnectionLimits.max_query_changes
    max_query_set_bytes: int = ConnectionLimits.max_query_set_bytes
    max_json_depth: int = ConnectionLimits.max_json_depth
    max_transition_bytes: int = 4 * 1024 * 1024
    received_query_set: int = 0
    received_identity: int = 0
    sent_version: StateVersion = field(default_factory=StateVersion)
    session_id: str | None = None
    protocol_error: ProtocolError | None = None
    _closed: bool = False
    _queries: dict[int, _Query] = field(default_factory=dict)
    _removed: list[int] = field(default_factory=list)
    _query_set_bytes: int = 0
    _pending_auth: int | None = None
    _transition_required: bool = False
    _min_ts: int = 0
    _outstanding: dict[int, Literal["Mutation", "Action"]] = field(default_factory=dict)
    # Output buffers, created on first use: most sockets hold nothing between two drains.
    _frames: list[bytes] | None = None
    _events: list[ClientEvent] | None = None
    # Keepalive at tick granularity: a flag per queued frame, no clock read.
    _wrote: bool = True  # the first tick starts the quiet clock
    _quiet_since: float = 0.0

    # ------------------------------------------------------------------ input: the client

    def receive_data(self, data: str | bytes, size: int | None = None) -> None:
        """Take one complete WebSocket message from the client.

        Args:
            data: a text message as ``str``; a binary message as ``bytes`` (a protocol error).
            size: the message's size in bytes, if known; else it is measured (UTF-8).

        A message that breaks the protocol (malformed, too large, against the version rules)
        queues a FatalError, sets :attr:`protocol_error` and makes :meth:`close_expected` true.
        Telemetry and unknown message types are ignored, as the spec recommends, so newer
        clients keep working.

        After calling this, send :meth:`data_to_send`'s frames, then act on
        :meth:`events_received` in order; if :meth:`close_expected`, close instead.
        """
        if self._closed:
            return
        try:
            events = self._parse(data, size)
        except ProtocolError as exc:
            self.protocol_error = exc
            self.send_fatal_error(str(exc))
            return
        if not events:
            return
        if self._events is None:
            self._events = events
        else:
            self._events.extend(events)

    def _parse(self, data: str | bytes, size: int | None) -> list[ClientEvent]:
        if size is None:
            # Bytes, not characters: 4-byte UTF-8 characters made a message 4x the limit pass.
            # A str can only be over in bytes if it is over len/4 characters.
            size = len(data)
            if isinstance(data, str) and size * 4 > self.max_message_bytes:
                size = len(data.encode("utf-8", "surrogatepass"))
        if size > self.max_message_bytes:
            raise ProtocolError(
                f"MessageTooLarge: {size} bytes exceeds the limit of {self.max_message_bytes}"
            )
        if isinstance(data, bytes | bytearray | memoryview) and not isinstance(data, str):
            raise ProtocolError("WSMessageInvalidJson: binary frames are not part of the protocol")
        if (error := too_many_query_changes(data, self.max_query_changes)) is not None:
            raise ProtocolError(error)
        try:
            message = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ProtocolError(f"WSMessageInvalidJson: {exc}") from None
        if not isinstance(message, dict):
            raise ProtocolError("WSMessageInvalidJson: a message must be a JSON object")
        mods = message.get("modifications")
        if isinstance(mods, list) and 0 < self.max_query_changes < len(mods):
            # Before the depth walk: 75,000 modifications took most of a second to walk.
            raise ProtocolError(
                f"TooManyQueries: {len(mods)} modifications in one ModifyQuerySet "
                f"exceed the limit of {self.max_query_changes}"
            )
        try:
            check_json_depth(message, self.max_json_depth + _ENVELOPE_DEPTH)
        except JsonTooDeep:
            raise ProtocolError(
                f"JsonTooDeep: arguments nest deeper than {self.max_json_depth} levels"
            ) from None
        kind = message.get("type")
        if kind == "Connect":
            return [self._on_connect(message)]
        if kind == "ModifyQuerySet":
            return self._on_modify_query_set(message)
        if kind in ("Mutation", "Action"):
            return [self._on_request(message, kind)]
        if kind == "Authenticate":
            return [self._on_authenticate(message)]
        # Event (telemetry), RetryDegradableQueries and any future type.
        return []

    def _on_connect(self, message: Mapping[str, Any]) -> Connected:
        session_id = message.get("sessionId")
        if not isinstance(session_id, str):
            raise ProtocolError("Connect: 'sessionId' must be a string")
        self.session_id = session_id
        raw_max = message.get("maxObservedTimestamp")
        max_ts: int | None = None
        if isinstance(raw_max, str):
            try:
                max_ts = decode_ts(raw_max)
            except (ValueError, ConvexValueError):
                raise ProtocolError("Connect: malformed 'maxObservedTimestamp'") from None
        reason = message.get("lastCloseReason")
        client_ts = message.get("clientTs")
        return Connected(
            session_id=session_id,
            connection_count=_int(message, "connectionCount")
            if "connectionCount" in message
            else 0,
            last_close_reason=reason if isinstance(reason, str) else None,
            max_observed_ts=max_ts,
            client_ts=float(client_ts) if isinstance(client_ts, int | float) else None,
        )

    def _on_modify_query_set(self, message: Mapping[str, Any]) -> list[ClientEvent]:
        base, new = _int(message, "baseVersion"), _int(message, "newVersion")
        if base != self.received_query_set:
            raise ProtocolError(
                f"BaseVersionMismatch: ModifyQuerySet baseVersion {base} but the server is at "
                f"querySet {self.received_query_set}"
            )
        if new <= base:
            raise ProtocolError(f"ModifyQuerySet: newVersion {new} must exceed baseVersion {base}")
        modifications = message.get("modifications")
        if not isinstance(modifications, list):
            raise ProtocolError("ModifyQuerySet: 'modifications' must be an array")
        # Validate the whole batch before changing anything, so a bad batch leaves no trace.
        # Each modification's checks are inlined for the common case (a 2,000-query set is
        # validated in one loop turn); the arguments are decoded later (QueryAdded.args).
        events: list[ClientEvent] = []
        append = events.append
        present = set(self._queries)
        # Arguments stay held while their query is subscribed: measured per query, so a set
        # cannot grow its held bytes by removing the small queries of a batch.
        measured = self.max_query_set_bytes > 0
        added_bytes: dict[int, int] = {}
        removed_bytes = 0
        for mod in modifications:
            if type(mod) is not dict:
                raise ProtocolError("ModifyQuerySet: each modification must be an object")
            query_id = mod.get("queryId")
            if type(query_id) is not int or not 0 <= query_id <= _U32_MAX:
                query_id = _int(mod, "queryId")
            kind = mod.get("type")
            if kind == "Add":
                if query_id in present:
                    raise ProtocolError(f"ModifyQuerySet: query {query_id} is already in the set")
                path = mod.get("udfPath")
                if type(path) is not str:
                    path = _str(mod, "udfPath")
                journal = mod.get("journal")
                if measured:
                    added_bytes[query_id] = _json_bytes(mod.get("args"))
                append(
                    QueryAdded.encoded(
                        query_id,
                        path,
                        mod.get("args"),
                        journal if type(journal) is str else None,
                    )
                )
                present.add(query_id)
            elif kind == "Remove":
                if query_id not in present:
                    raise ProtocolError(f"ModifyQuerySet: query {query_id} is not in the set")
                events.append(QueryRemoved(query_id))
                present.discard(query_id)
                if query_id in added_bytes:  # added and removed in this one message
                    removed_bytes += added_bytes.pop(query_id)
                elif measured:
                    removed_bytes += self._queries[query_id].args_bytes
            else:
                raise ProtocolError(f"ModifyQuerySet: unknown modification {kind!r}")
        if 0 < self.max_queries < len(present):
            raise ProtocolError(
                f"TooManyQueries: a query set of {len(present)} exceeds the limit of "
                f"{self.max_queries} per connection"
            )
        if measured:
            held = self._query_set_bytes + sum(added_bytes.values()) - removed_bytes
            if held > self.max_query_set_bytes:
                raise ProtocolError(
                    f"QuerySetTooLarge: the query set's arguments would take {held} bytes, "
                    f"over the limit of {self.max_query_set_bytes} per connection"
                )
            self._query_set_bytes = held
        for event in events:
            if isinstance(event, QueryAdded):
                self._queries[event.query_id] = _Query(
                    event.udf_path, event.journal, added_bytes.get(event.query_id, 0)
                )
            else:
                assert isinstance(event, QueryRemoved)
                del self._queries[event.query_id]
                self._removed.append(event.query_id)
        self.received_query_set = new
        return events

    def _on_request(
        self, message: Mapping[str, Any], kind: Literal["Mutation", "Action"]
    ) -> MutationRequested | ActionRequested:
        request_id = _int(message, "requestId")
        path = _str(message, "udfPath")
        if request_id in self._outstanding:
            raise ProtocolError(f"{kind}: requestId {request_id} is already in flight")
        args, error = _args(message.get("args"))
        self._outstanding[request_id] = kind
        if kind == "Mutation":
            # Valid args are a list holding one object (``_args``). Its canonical bytes are
            # those of the decoded value encoded again (but for a -0 number, which encodes as
            # $float), for a fraction of the cost.
            canonical = None
            if error is None:
                with contextlib.suppress(orjson.JSONEncodeError):  # deeper than orjson writes
                    raw = cast(list[Any], message["args"])[0]
                    canonical = orjson.dumps(raw, option=orjson.OPT_SORT_KEYS)
            return MutationRequested(request_id, path, args, error, canonical)
        return ActionRequested(request_id, path, args, error)

    def _on_authenticate(self, message: Mapping[str, Any]) -> AuthenticateRequested:
        base = _int(message, "baseVersion")
        if self._pending_auth is not None:
            raise ProtocolError("Authenticate: the previous Authenticate is still being checked")
        if base != self.received_identity:
            raise ProtocolError(
                f"BaseVersionMismatch: Authenticate baseVersion {base} but the server is at "
                f"identity {self.received_identity}"
            )
        token_type = message.get("tokenType")
        if token_type not in ("Admin", "User", "None"):
            raise ProtocolError(f"Authenticate: unknown tokenType {token_type!r}")
        value = message.get("value")
        if token_type != "None" and not isinstance(value, str):
            raise ProtocolError("Authenticate: 'value' must be a string")
        acting_as = message.get("impersonating", message.get("acting_as"))
        self._pending_auth = base
        return AuthenticateRequested(
            base,
            token_type,
            value if isinstance(value, str) else None,
            acting_as if isinstance(acting_as, dict) else None,
        )

    # ------------------------------------------------------------------ input: the driver

    def send_mutation_response(
        self, request_id: int, outcome: FunctionOutcome, ts: int | None
    ) -> None:
        """Answer a :class:`MutationRequested` with its outcome; ``ts`` is its commit timestamp.

        The next Transition will carry ``ts`` or later, which is what resolves the mutation.

        Raises:
            RuntimeError: no Mutation with this id is outstanding (a driver bug).
            ValueError: a successful outcome without its ``ts``.

        After calling this, send :meth:`data_to_send`'s frames; a Transition is now due
        (:meth:`send_transition`) before the driver answers the next mutation.
        """
        self._finish_request(request_id, "Mutation")
        message: dict[str, Any] = {"type": "MutationResponse", "requestId": request_id}
        message.update(_outcome_fields(outcome))
        if outcome.success:
            if ts is None:
                raise ValueError("a successful mutation needs its commit ts")
            message["ts"] = encode_ts(ts)
            self._min_ts = max(self._min_ts, ts)
        else:
            message["ts"] = None
        message["logLines"] = list(outcome.log_lines)
        self._queue(_dumps(message))

    def send_action_response(self, request_id: int, outcome: FunctionOutcome) -> None:
        """Answer an :class:`ActionRequested` with its outcome.

        Raises:
            RuntimeError: no Action with this id is outstanding (a driver bug).

        After calling this, send :meth:`data_to_send`'s frames; a Transition is now due.
        """
        self._finish_request(request_id, "Action")
        message: dict[str, Any] = {"type": "ActionResponse", "requestId": request_id}
        message.update(_outcome_fields(outcome))
        message["logLines"] = list(outcome.log_lines)
        self._queue(_dumps(message))

    def _finish_request(self, request_id: int, kind: str) -> None:
        if self._outstanding.get(request_id) != kind:
            raise RuntimeError(f"no {kind} {request_id} is outstanding")
        del self._outstanding[request_id]
        self._transition_required = True

    def accept_auth(self) -> None:
        """Accept the pending Authenticate: the identity version advances, all results resend.

        Raises:
            RuntimeError: no Authenticate is pending (a driver bug).

        After calling this, re-run the queries under the new identity, then call
        :meth:`send_transition` (it is due) and send :meth:`data_to_send`'s frames.
        """
        if self._pending_auth is None:
            raise RuntimeError("no Authenticate is pending")
        self._pending_auth = None
        self.received_identity += 1
        for query in self._queries.values():
            query.last_sent = None
        self._transition_required = True

    def reject_auth(self, error: str) -> None:
        """Reject the pending Authenticate with an AuthError.

        After calling this, send :meth:`data_to_send`'s frames and close the socket
        (:meth:`close_expected` is true).
        """
        base = self._pending_auth if self._pending_auth is not None else self.received_identity
        self._pending_auth = None
        self._auth_error(error, base, attempted=True)

    def expire_auth(self, error: str) -> None:
        """The accepted token expired: AuthError (``authUpdateAttempted: false``), then close.

        After calling this, send :meth:`data_to_send`'s frames and close the socket.
        """
        if not self._closed:
            self._auth_error(error, self.received_identity, attempted=False)

    def _auth_error(self, error: str, base: int, *, attempted: bool) -> None:
        message = {
            "type": "AuthError",
            "error": error,
            "baseVersion": base,
            "authUpdateAttempted": attempted,
        }
        self._queue(_dumps(message))
        self._closed = True

    def send_fatal_error(self, error: str) -> None:
        """End the connection with a FatalError (e.g. a failure below the message level).

        Nothing is queued if the connection is already ending.

        After calling this, send :meth:`data_to_send`'s frames and close the socket
        (:meth:`close_expected` is true).
        """
        if self._closed:
            return
        self._queue(_dumps({"type": "FatalError", "error": error}))
        self._closed = True

    def send_transition(
        self,
        ts: int,
        results: Mapping[int, FunctionOutcome],
        *,
        force: bool = False,
        shared: SharedTransitions | None = None,
    ) -> bool:
        """Queue the next Transition from the latest results, if there is anything to say.

        Args:
            ts: the timestamp every result in ``results`` was computed at.
            results: the latest result of each query in the set (missing ids are skipped).
            force: send a Transition even when nothing changed (it still advances ``ts``).
            shared: a cache the caller keeps for one fan-out (same ts, same result objects):
                sockets whose Transitions would be byte-identical share one encoding.

        Returns:
            Whether a Transition was queued (one or, when split, several frames).

        Raises:
            ValueError: ``ts`` is older than a mutation already answered (a driver bug).

        After calling this, send :meth:`data_to_send`'s frames.
        """
        if self._closed:
            return False
        changed: list[tuple[int, FunctionOutcome]] = []
        for query_id, query in self._queries.items():
            outcome = results.get(query_id)
            if outcome is None:
                continue
            last = query.last_sent
            if last is not outcome:
                if last is None or not _same(last, outcome):
                    changed.append((query_id, outcome))
                query.last_sent = outcome
        removed = self._removed
        if not (changed or removed or force or self.transition_due):
            return False
        if ts < self._min_ts:
            raise ValueError(f"transition ts {ts} is older than a mutation already answered")
        start = self.sent_version
        end_ts = ts if ts > start.ts else start.ts
        key: Any = None
        if shared is not None:
            # The result objects are alive for the whole fan-out, so their ids are stable.
            # A flat tuple of ints hashes fast (this runs once per socket per commit). A hit
            # also shares the end version: sockets whose keys match end at the same version.
            key = (
                start.query_set,
                start.identity,
                start.ts,
                self.received_query_set,
                self.received_identity,
                end_ts,
                tuple(removed),
                *[x for q, o in changed for x in (q, id(o))],
            )
            cached = shared.get(key)
            if cached is not None:
                self._advance(cached[0])
                self._queue(cached[1])
                return True
        end = StateVersion(self.received_query_set, self.received_identity, end_ts)
        modifications: list[dict[str, Any]] = [
            {"type": "QueryRemoved", "queryId": query_id} for query_id in self._removed
        ]
        modifications.extend(self._modification(q, o) for q, o in changed)
        self._advance(end)
        data = _dumps(
            {
                "type": "Transition",
                "startVersion": start.to_json(),
                "endVersion": end.to_json(),
                "modifications": modifications,
            }
        )
        if len(data) > self.max_transition_bytes and len(modifications) > 1:
            for frame in self._split(start, end, modifications):
                self._queue(frame)
            return True
        if shared is not None:
            shared[key] = (end, data)
        self._queue(data)
        return True

    # ------------------------------------------------------------------ input: time, transport

    def tick(self, now: float) -> None:
        """Time passed: queue a Ping if nothing was queued for ``ping_interval_s``.

        Args:
            now: monotonic seconds. A socket counts as quiet from the first tick after its
                last frame, so call this about once a second, while the socket can take writes.

        After calling this, send :meth:`data_to_send`'s frames.
        """
        if self._closed:
            return
        if self._wrote:
            self._wrote = False
            self._quiet_since = now
        elif now - self._quiet_since >= self.ping_interval_s:
            self._queue(_PING)
            self._wrote = False
            self._quiet_since = now

    def connection_lost(self) -> None:
        """The socket is gone (closed, dropped or aborted): nothing more goes in or out.

        After calling this, release what the connection holds; there is nothing to send.
        """
        self._closed = True
        self._frames = None
        self._events = None

    # ------------------------------------------------------------------ output

    def data_to_send(self) -> list[bytes]:
        """The frames to send, in order, since the last call (each one text frame)."""
        frames = self._frames
        if frames is None:
            return []
        self._frames = None
        return frames

    def events_received(self) -> list[ClientEvent]:
        """What the client asked for, in order, since the last call."""
        events = self._events
        if events is None:
            return []
        self._events = None
        return events

    def close_expected(self) -> bool:
        """Whether the connection is ending: after a FatalError, an AuthError or its loss."""
        return self._closed

    @property
    def query_ids(self) -> list[int]:
        """The ids of the queries currently in the set."""
        return list(self._queries)

    def udf_path(self, query_id: int) -> str:
        """The path a query was added with."""
        return self._queries[query_id].udf_path

    @property
    def transition_due(self) -> bool:
        """Whether a Transition must be sent even if no result changed.

        True after a ModifyQuerySet or an accepted Authenticate not yet reflected, and after
        every Mutation/Action response (clients resolve mutations on the next Transition).
        """
        sent = self.sent_version
        return (
            self._transition_required
            or bool(self._removed)
            or sent.query_set != self.received_query_set
            or sent.identity != self.received_identity
        )

    def _queue(self, frame: bytes) -> None:
        frames = self._frames
        if frames is None:
            self._frames = [frame]
        else:
            frames.append(frame)
        self._wrote = True

    def _split(
        self, start: StateVersion, end: StateVersion, modifications: list[dict[str, Any]]
    ) -> list[bytes]:
        groups: list[list[dict[str, Any]]] = [[]]
        size = 0
        for mod in modifications:
            mod_size = len(_dumps(mod))
            if groups[-1] and size + mod_size > self.max_transition_bytes:
                groups.append([])
                size = 0
            groups[-1].append(mod)
            size += mod_size
        frames = []
        for i, group in enumerate(groups):
            frames.append(
                _dumps(
                    {
                        "type": "Transition",
                        "startVersion": (start if i == 0 else end).to_json(),
                        "endVersion": end.to_json(),
                        "modifications": group,
                    }
                )
            )
        return frames

    def _advance(self, end: StateVersion) -> None:
        if self._removed:
            self._removed.clear()
        self._transition_required = False
        self.sent_version = end

    @staticmethod
    def _modification(query_id: int, outcome: FunctionOutcome) -> dict[str, Any]:
        # Journals are opaque to clients: a paginated page's end (engine/_pagination.py), which
        # the client sends back when it re-subscribes; null otherwise (always send the field).
        journal = getattr(outcome, "journal", None)
        if outcome.success:
            return {
                "type": "QueryUpdated",
                "queryId": query_id,
                "value": _value_fragment(outcome),
                "logLines": list(outcome.log_lines),
                "journal": journal,
            }
        failed: dict[str, Any] = {
            "type": "QueryFailed",
            "queryId": query_id,
            "errorMessage": outcome.error_message or "Server Error",
            "logLines": list(outcome.log_lines),
            "journal": journal,
        }
        has_data, data = _error_data(outcome)
        if has_data:
            failed["errorData"] = data
        return failed
