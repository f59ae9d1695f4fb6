"""The sans-I/O sync protocol, fed messages the way the official clients send them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from marketpulse.reactive.engine import FunctionResult
from marketpulse.reactive.sync.protocol import (
    ActionRequested,
    AuthenticateRequested,
    ClientEvent,
    Connected,
    MutationRequested,
    ProtocolError,
    QueryAdded,
    QueryRemoved,
    SharedTransitions,
    SyncProtocol,
    failed_outcome,
)
from marketpulse.reactive.values import Int64, decode_ts, encode_ts


@dataclass(frozen=True)
class Result:
    success: bool = True
    value: Any = None
    error_message: str | None = None
    error_data: Any = None
    log_lines: list[str] = field(default_factory=list)


def ok(value: Any, *logs: str) -> Result:
    return Result(True, value, None, None, list(logs))


def msg(**fields: Any) -> str:
    return orjson.dumps(fields).decode()


def receive(p: SyncProtocol, data: str | bytes) -> list[ClientEvent]:
    """Feed one message; what the client asked for."""
    p.receive_data(data)
    return p.events_received()


def sent(p: SyncProtocol, ts: int, results: dict[int, Any], **kw: Any) -> bytes | None:
    """The one frame ``send_transition`` queued, or None when it queued nothing."""
    if not p.send_transition(ts, results, **kw):
        assert p.data_to_send() == []
        return None
    (frame,) = p.data_to_send()
    return frame


def connect(p: SyncProtocol, session: str = "s1") -> None:
    (event,) = receive(
        p,
        msg(
            type="Connect",
            sessionId=session,
            connectionCount=0,
            lastCloseReason="InitialConnect",
            clientTs=0,
        ),
    )
    assert isinstance(event, Connected) and event.session_id == session


def add(qs: int, *queries: tuple[int, str, dict[str, Any]]) -> str:
    return msg(
        type="ModifyQuerySet",
        baseVersion=qs,
        newVersion=qs + 1,
        modifications=[
            {"type": "Add", "queryId": q, "udfPath": path, "args": [args]}
            for q, path, args in queries
        ],
    )


def remove(qs: int, *ids: int) -> str:
    return msg(
        type="ModifyQuerySet",
        baseVersion=qs,
        newVersion=qs + 1,
        modifications=[{"type": "Remove", "queryId": q} for q in ids],
    )


def transition(p: SyncProtocol, ts: int, results: dict[int, Any], **kw: Any) -> dict[str, Any]:
    data = sent(p, ts, results, **kw)
    assert data is not None
    out: dict[str, Any] = orjson.loads(data)
    return out


class Chain:
    """Checks the docs/protocols/convex-sync.md §10 invariants over every Transition a protocol emits."""

    def __init__(self) -> None:
        self.end = {"querySet": 0, "identity": 0, "ts": encode_ts(0)}

    def check(self, t: dict[str, Any], sent_qs: int, sent_identity: int) -> None:
        assert t["type"] == "Transition"
        assert t["startVersion"] == self.end, "chain must be continuous"
        end = t["endVersion"]
        assert end["querySet"] <= sent_qs and end["identity"] <= sent_identity
        assert decode_ts(end["ts"]) >= decode_ts(self.end["ts"]), "ts never decreases"
        assert end["querySet"] >= self.end["querySet"]
        assert end["identity"] >= self.end["identity"]
        assert "clientClockSkew" not in t and "serverTs" not in t and "serverPressure" not in t
        for mod in t["modifications"]:
            if mod["type"] in ("QueryUpdated", "QueryFailed"):
                assert mod["journal"] is None and isinstance(mod["logLines"], list)
            if mod["type"] == "QueryUpdated":
                assert "value" in mod
        self.end = end


def test_first_transition_starts_at_zero_and_reflects_the_query_set() -> None:
    p = SyncProtocol()
    connect(p)
    assert sent(p, 5, {}) is None, "nothing is sent before a state change"
    (event,) = receive(p, add(0, (0, "messages:list", {"channel": "a"})))
    assert event == QueryAdded(0, "messages:list", {"channel": "a"}, None)
    assert p.transition_due
    t = transition(p, 7, {0: ok([1, 2], "[LOG] hi")})
    chain = Chain()
    chain.check(t, 1, 0)
    assert t["startVersion"] == {"querySet": 0, "identity": 0, "ts": "AAAAAAAAAAA="}
    assert t["endVersion"] == {"querySet": 1, "identity": 0, "ts": encode_ts(7)}
    assert t["modifications"] == [
        {
            "type": "QueryUpdated",
            "queryId": 0,
            "value": [1, 2],
            "logLines": ["[LOG] hi"],
            "journal": None,
        }
    ]
    assert not p.transition_due


def test_unchanged_results_are_not_resent_and_chain_stays_continuous() -> None:
    p = SyncProtocol()
    chain = Chain()
    receive(p, add(0, (0, "a:q", {}), (1, "a:r", {})))
    chain.check(transition(p, 1, {0: ok(1), 1: ok("x")}), 1, 0)
    assert sent(p, 2, {0: ok(1), 1: ok("x")}) is None
    t = transition(p, 3, {0: ok(2), 1: ok("x")})
    chain.check(t, 1, 0)
    assert [m["queryId"] for m in t["modifications"]] == [0]
    # An empty Transition is legal when forced: it only advances ts.
    t = transition(p, 4, {0: ok(2), 1: ok("x")}, force=True)
    chain.check(t, 1, 0)
    assert t["modifications"] == [] and decode_ts(t["endVersion"]["ts"]) == 4
    # A smaller engine ts never moves the chain backwards.
    t = transition(p, 2, {0: ok(3), 1: ok("x")})
    chain.check(t, 1, 0)
    assert decode_ts(t["endVersion"]["ts"]) == 4


def test_remove_sends_query_removed_and_ids_can_be_reused() -> None:
    p = SyncProtocol()
    chain = Chain()
    receive(p, add(0, (0, "a:q", {})))
    chain.check(transition(p, 1, {0: ok(1)}), 1, 0)
    assert receive(p, remove(1, 0)) == [QueryRemoved(0)]
    t = transition(p, 1, {})
    chain.check(t, 2, 0)
    assert t["modifications"] == [{"type": "QueryRemoved", "queryId": 0}]
    # Add and Remove in one batch (Python's query(): subscribe then unsubscribe).
    events = receive(
        p,
        msg(
            type="ModifyQuerySet",
            baseVersion=2,
            newVersion=3,
            modifications=[
                {"type": "Add", "queryId": 0, "udfPath": "a:q", "args": [{}]},
                {"type": "Remove", "queryId": 0},
            ],
        ),
    )
    assert [type(e) for e in events] == [QueryAdded, QueryRemoved]
    t = transition(p, 2, {})
    chain.check(t, 3, 0)
    assert t["modifications"] == [{"type": "QueryRemoved", "queryId": 0}]
    assert p.query_ids == []


@pytest.mark.parametrize(
    "bad",
    [
        add(1, (0, "a:q", {})),  # baseVersion ahead of the server
        msg(type="ModifyQuerySet", baseVersion=0, newVersion=0, modifications=[]),
        msg(
            type="ModifyQuerySet",
            baseVersion=0,
            newVersion=1,
            modifications=[{"type": "Remove", "queryId": 9}],
        ),
        msg(
            type="ModifyQuerySet",
            baseVersion=0,
            newVersion=1,
            modifications=[
                {"type": "Add", "queryId": 1, "udfPath": "a:q", "args": [{}]},
                {"type": "Add", "queryId": 1, "udfPath": "a:q", "args": [{}]},
            ],
        ),
        msg(type="ModifyQuerySet", baseVersion=0, newVersion=1, modifications="nope"),
        msg(type="ModifyQuerySet", baseVersion=-1, newVersion=1, modifications=[]),
        msg(type="ModifyQuerySet", baseVersion=True, newVersion=1, modifications=[]),
        msg(type="Authenticate", baseVersion=1, tokenType="None"),
        msg(type="Authenticate", baseVersion=0, tokenType="Wizard", value="x"),
        msg(type="Mutation", requestId="0", udfPath="a:m", args=[{}]),
        msg(type="Connect"),
        "{not json",
        "[1, 2]",
        b"\x00binary",
    ],
)
def test_malformed_or_out_of_order_messages_are_fatal_and_leave_no_trace(bad: str | bytes) -> None:
    p = SyncProtocol()
    assert receive(p, bad) == []
    assert isinstance(p.protocol_error, ProtocolError)
    assert p.received_query_set == 0 and p.received_identity == 0 and p.query_ids == []
    (fatal,) = p.data_to_send()
    assert orjson.loads(fatal) == {"type": "FatalError", "error": str(p.protocol_error)}
    assert p.close_expected() and receive(p, add(0, (0, "a:q", {}))) == []
    assert p.data_to_send() == [], "nothing after the FatalError"


def test_a_fatal_error_from_the_driver_ends_the_connection_once() -> None:
    p = SyncProtocol()
    p.send_fatal_error("boom")
    (fatal,) = p.data_to_send()
    assert orjson.loads(fatal) == {"type": "FatalError", "error": "boom"}
    assert p.close_expected() and p.protocol_error is None
    p.send_fatal_error("again")
    assert p.data_to_send() == []


def test_a_message_over_the_limit_is_fatal() -> None:
    p = SyncProtocol(max_message_bytes=200)
    assert receive(p, add(0, (0, "a:q", {"pad": "x" * 40}))) != []
    assert receive(p, add(1, (1, "a:q", {"pad": "x" * 100}))) == []
    assert "MessageTooLarge" in str(p.protocol_error) and p.close_expected()
    assert p.query_ids == [0]


def test_modifications_are_counted_before_parsing() -> None:
    # Every modification names its "queryId": counting that string bounds a ModifyQuerySet
    # before it is parsed (75,000 modifications took 0.15-0.3 s to parse only to be refused).
    p = SyncProtocol(max_query_changes=3)
    connect(p)
    assert receive(p, add(0, *((i, "a:q", {}) for i in range(3)))) != []
    # Arguments that use the string are counted with the modifications, and the error says so.
    assert receive(p, add(1, (3, "a:q", {"k": ["queryId"] * 3}))) == []
    assert '4 modifications ("queryId" strings)' in str(p.protocol_error)
    # Other messages are not counted.
    q = SyncProtocol(max_query_changes=3)
    connect(q)
    mutation = msg(type="Mutation", requestId=0, udfPath="a:m", args=[{"k": ["queryId"] * 9}])
    assert receive(q, mutation) != [] and q.protocol_error is None


def test_base_version_mismatch_error_names_the_rule() -> None:
    p = SyncProtocol()
    receive(p, add(0, (0, "a:q", {})))
    assert receive(p, add(0, (1, "a:q", {}))) == []
    assert isinstance(p.protocol_error, ProtocolError)
    assert "BaseVersionMismatch" in str(p.protocol_error)


def test_unknown_and_telemetry_messages_are_ignored() -> None:
    p = SyncProtocol()
    assert receive(p, msg(type="Event", eventType="ClientConnect", event={})) == []
    assert receive(p, msg(type="RetryDegradableQueries", epoch=3)) == []
    assert receive(p, msg(type="SomethingNew")) == []
    assert not p.transition_due


def test_bad_args_become_function_errors_not_fatal() -> None:
    p = SyncProtocol()
    events = receive(
        p,
        msg(
            type="ModifyQuerySet",
            baseVersion=0,
            newVersion=1,
            modifications=[
                {"type": "Add", "queryId": 0, "udfPath": "a:q", "args": {"x": 1}},
                {"type": "Add", "queryId": 1, "udfPath": "a:q", "args": [{"$set": []}]},
                {
                    "type": "Add",
                    "queryId": 2,
                    "udfPath": "a:q",
                    "args": [{"n": {"$integer": "AQAAAAAAAAA="}}],
                },
            ],
        ),
    )
    assert isinstance(events[0], QueryAdded) and events[0].args_error
    assert isinstance(events[1], QueryAdded) and events[1].args_error
    assert isinstance(events[2], QueryAdded) and events[2].args == {"n": Int64(1)}
    assert events[2].args_error is None
    (m,) = receive(p, msg(type="Mutation", requestId=0, udfPath="a:m", args=[]))
    assert isinstance(m, MutationRequested) and m.args_error


def test_a_mutations_canonical_args_are_those_of_its_decoded_args() -> None:
    """The replay check hashes ``args_json`` instead of encoding the decoded args again: the
    bytes must be the same, whatever the key order on the wire."""
    from marketpulse.reactive.values import value_to_json

    wire = {
        "z": [1.5, "é", None, True, {"b": 2.0, "a": {"$integer": "AQAAAAAAAAA="}}],
        "a": {"$bytes": "AAE="},
        "m": {"y": [[0.4, 10.0]], "x": "w"},
    }
    (m,) = receive(
        p := SyncProtocol(), msg(type="Mutation", requestId=0, udfPath="a:m", args=[wire])
    )
    assert isinstance(m, MutationRequested) and m.args_error is None
    assert m.args_json == orjson.dumps(value_to_json(m.args), option=orjson.OPT_SORT_KEYS)
    reordered = dict(reversed(list(wire.items())))
    (again,) = receive(p, msg(type="Mutation", requestId=1, udfPath="a:m", args=[reordered]))
    assert again.args_json == m.args_json
    (bad,) = receive(p, msg(type="Mutation", requestId=2, udfPath="a:m", args=[1]))
    assert bad.args_error and bad.args_json is None


def test_every_mutation_response_is_followed_by_a_transition_at_or_after_its_ts() -> None:
    p = SyncProtocol()
    chain = Chain()
    receive(p, add(0, (0, "a:q", {})))
    chain.check(transition(p, 10, {0: ok(0)}), 1, 0)
    (m,) = receive(p, msg(type="Mutation", requestId=0, udfPath="a:inc", args=[{}]))
    assert m == MutationRequested(0, "a:inc", {})
    p.send_mutation_response(0, ok(Int64(5), "[LOG] did it"), ts=20)
    (raw,) = p.data_to_send()
    resp = orjson.loads(raw)
    assert resp == {
        "type": "MutationResponse",
        "requestId": 0,
        "success": True,
        "result": {"$integer": "BQAAAAAAAAA="},
        "ts": encode_ts(20),
        "logLines": ["[LOG] did it"],
    }
    assert p.transition_due
    with pytest.raises(ValueError):
        sent(p, 15, {0: ok(1)})  # older than the commit it must reflect
    t = transition(p, 20, {0: ok(1)})
    chain.check(t, 1, 0)
    assert decode_ts(t["endVersion"]["ts"]) >= 20
    # A failed mutation also gets a Transition, even if nothing changed.
    receive(p, msg(type="Mutation", requestId=1, udfPath="a:bad", args=[{}]))
    p.send_mutation_response(1, failed_outcome("Uncaught Error: no"), ts=None)
    (raw,) = p.data_to_send()
    resp = orjson.loads(raw)
    assert resp["success"] is False and resp["ts"] is None
    assert resp["result"] == "Uncaught Error: no" and "errorData" not in resp
    assert p.transition_due
    chain.check(transition(p, 20, {0: ok(1)}), 1, 0)
    assert not p.transition_due


def test_error_data_only_for_convex_errors() -> None:
    p = SyncProtocol()
    receive(p, add(0, (0, "a:plain", {}), (1, "a:convex", {}), (2, "a:nulldata", {})))
    plain = Result(False, None, "Uncaught Error: boom", None, ["[ERROR] x"])
    convex = Result(False, None, "Uncaught ConvexError: {...}", {"code": 7}, [])
    t = transition(p, 1, {0: plain, 1: convex, 2: failed_outcome("x")})
    failed = {m["queryId"]: m for m in t["modifications"]}
    assert failed[0] == {
        "type": "QueryFailed",
        "queryId": 0,
        "errorMessage": "Uncaught Error: boom",
        "logLines": ["[ERROR] x"],
        "journal": None,
    }
    assert failed[1]["errorData"] == {"code": 7}
    assert "errorData" not in failed[2]
    (a,) = receive(p, msg(type="Action", requestId=3, udfPath="a:act", args=[{}]))
    assert isinstance(a, ActionRequested)
    p.send_action_response(3, convex)
    (raw,) = p.data_to_send()
    resp = orjson.loads(raw)
    assert resp == {
        "type": "ActionResponse",
        "requestId": 3,
        "success": False,
        "result": "Uncaught ConvexError: {...}",
        "errorData": {"code": 7},
        "logLines": [],
    }


def test_duplicate_request_id_in_flight_is_fatal_and_responses_must_match() -> None:
    p = SyncProtocol()
    receive(p, msg(type="Mutation", requestId=0, udfPath="a:m", args=[{}]))
    assert receive(p, msg(type="Action", requestId=0, udfPath="a:m", args=[{}])) == []
    assert isinstance(p.protocol_error, ProtocolError) and p.close_expected()
    with pytest.raises(RuntimeError):
        p.send_action_response(0, ok(1))
    p.send_mutation_response(0, ok(1), ts=1)
    with pytest.raises(RuntimeError):
        p.send_mutation_response(0, ok(1), ts=1)


def test_accepted_authenticate_bumps_identity_and_resends_all_results() -> None:
    p = SyncProtocol()
    chain = Chain()
    receive(p, add(0, (0, "a:q", {})))
    chain.check(transition(p, 1, {0: ok("anon")}), 1, 0)
    (auth,) = receive(
        p,
        msg(
            type="Authenticate",
            baseVersion=0,
            tokenType="Admin",
            value="k",
            impersonating={"subject": "u"},
        ),
    )
    assert auth == AuthenticateRequested(0, "Admin", "k", {"subject": "u"})
    assert sent(p, 1, {0: ok("anon")}) is None, "nothing accepted yet"
    p.accept_auth()
    t = transition(p, 1, {0: ok("anon")})
    chain.check(t, 1, 1)
    assert t["endVersion"]["identity"] == 1 > t["startVersion"]["identity"]
    assert [m["queryId"] for m in t["modifications"]] == [0], "all queries re-run and resent"
    # Logging out is an Authenticate too.
    (auth,) = receive(p, msg(type="Authenticate", baseVersion=1, tokenType="None"))
    assert auth.token_type == "None"
    p.accept_auth()
    t = transition(p, 1, {0: ok("anon")})
    chain.check(t, 1, 2)
    assert t["endVersion"]["identity"] == 2


def test_rejected_authenticate_sends_auth_error_and_closes() -> None:
    p = SyncProtocol()
    receive(p, msg(type="Authenticate", baseVersion=0, tokenType="User", value="jwt"))
    p.reject_auth("User tokens are not accepted")
    (raw,) = p.data_to_send()
    err = orjson.loads(raw)
    assert err == {
        "type": "AuthError",
        "error": "User tokens are not accepted",
        "baseVersion": 0,
        "authUpdateAttempted": True,
    }
    assert p.close_expected() and sent(p, 1, {}, force=True) is None


def test_authenticate_while_one_is_pending_is_fatal() -> None:
    p = SyncProtocol()
    receive(p, msg(type="Authenticate", baseVersion=0, tokenType="Admin", value="k"))
    assert receive(p, msg(type="Authenticate", baseVersion=0, tokenType="Admin", value="k")) == []
    assert isinstance(p.protocol_error, ProtocolError) and p.close_expected()


def test_connect_decodes_max_observed_timestamp() -> None:
    p = SyncProtocol()
    (c,) = receive(
        p,
        msg(
            type="Connect",
            sessionId="x",
            connectionCount=3,
            lastCloseReason=None,
            maxObservedTimestamp=encode_ts(123456789),
            clientTs=17.0,
        ),
    )
    assert c == Connected("x", 3, None, 123456789, 17.0)


def test_engine_encoded_fragment_is_spliced_verbatim() -> None:
    p = SyncProtocol()
    receive(p, add(0, (0, "a:q", {})))
    r = FunctionResult(True, {"b": 1}, encoded_json=b'{"b": 1}')
    raw = sent(p, 1, {0: r})
    assert raw is not None and b'"value":{"b": 1}' in raw, "spliced verbatim, not re-encoded"
    # An equal outcome from a fresh run counts as unchanged.
    again = FunctionResult(True, {"b": 1}, encoded_json=b'{"b": 1}')
    assert sent(p, 2, {0: again}) is None
    changed = FunctionResult(True, {"b": 2}, encoded_json=b'{"b":2}')
    assert sent(p, 3, {0: changed}) is not None


def test_engine_convex_error_with_null_data_still_sends_error_data() -> None:
    p = SyncProtocol()
    receive(p, add(0, (0, "a:q", {}), (1, "a:r", {})))
    convex_null = FunctionResult(
        False,
        error_message="Uncaught ConvexError: None",
        has_error_data=True,
        encoded_error_data=None,
    )
    plain = FunctionResult.failure("Uncaught RuntimeError: x")
    t = transition(p, 1, {0: convex_null, 1: plain})
    mods = {m["queryId"]: m for m in t["modifications"]}
    assert "errorData" in mods[0] and mods[0]["errorData"] is None
    assert "errorData" not in mods[1]


def test_sockets_in_the_same_state_share_one_encoding() -> None:
    r = FunctionResult(True, 5.0, encoded_json=b"5.0")
    shared: SharedTransitions = {}
    protos = [SyncProtocol() for _ in range(3)]
    for p in protos:
        receive(p, add(0, (0, "a:q", {})))
    first = [sent(p, 9, {0: r}, shared=shared) for p in protos]
    assert first[0] is first[1] is first[2], "encoded once"
    assert protos[0].sent_version is protos[2].sent_version, "and one end version"
    assert len(shared) == 1
    # A socket at another point of its chain gets its own, correct Transition.
    other = SyncProtocol()
    receive(other, add(0, (3, "a:q", {})))
    mine = sent(other, 9, {3: r}, shared=shared)
    assert mine is not None and mine != first[0]
    assert orjson.loads(mine)["modifications"][0]["queryId"] == 3
    # Each protocol advanced its own chain.
    assert all(p.sent_version.ts == 9 and not p.transition_due for p in protos)
    r2 = FunctionResult(True, 6.0, encoded_json=b"6.0")
    t = transition(protos[0], 10, {0: r2}, shared={})
    assert t["startVersion"]["ts"] == encode_ts(9) and t["modifications"][0]["value"] == 6.0


def test_an_oversized_transition_is_split_into_a_continuous_chain() -> None:
    p = SyncProtocol(max_transition_bytes=300)
    chain = Chain()
    receive(p, add(0, *((q, "a:q", {"q": q}) for q in range(6))))
    results = {q: ok("x" * 100) for q in range(6)}
    assert p.send_transition(5, results)
    frames = [orjson.loads(f) for f in p.data_to_send()]
    assert len(frames) >= 3 and all(len(orjson.dumps(f)) < 600 for f in frames)
    for f in frames:
        chain.check(f, 1, 0)
    assert frames[0]["startVersion"]["querySet"] == 0
    assert all(f["startVersion"] == f["endVersion"] for f in frames[1:])
    ids = [m["queryId"] for f in frames for m in f["modifications"]]
    assert sorted(ids) == list(range(6)), "every result delivered exactly once"
    assert p.data_to_send() == []
    # Small transitions are not split.
    p.max_transition_bytes = 10_000
    assert sent(p, 6, {q: ok("y") for q in range(6)}) is not None, "one frame"


def test_a_quiet_socket_gets_a_ping_each_interval() -> None:
    p = SyncProtocol(ping_interval_s=15.0)
    p.tick(100.0)  # the first tick starts the quiet clock
    p.tick(114.0)
    assert p.data_to_send() == []
    p.tick(115.0)
    assert [orjson.loads(f) for f in p.data_to_send()] == [{"type": "Ping"}]
    p.tick(129.0)
    assert p.data_to_send() == []
    # Any frame restarts the clock.
    receive(p, add(0, (0, "a:q", {})))
    assert sent(p, 1, {0: ok(1)}) is not None
    p.tick(130.0)
    p.tick(144.0)
    assert p.data_to_send() == []
    p.tick(145.0)
    assert len(p.data_to_send()) == 1


def test_after_the_connection_is_lost_nothing_goes_in_or_out() -> None:
    p = SyncProtocol()
    receive(p, add(0, (0, "a:q", {})))
    p.connection_lost()
    assert p.close_expected()
    assert receive(p, add(1, (1, "a:q", {}))) == []
    assert sent(p, 1, {0: ok(1)}, force=True) is None
    p.tick(0.0)
    p.tick(1_000.0)
    assert p.data_to_send() == []


def test_a_paginated_result_sends_its_journal() -> None:
    p = SyncProtocol()
    connect(p)
    receive(p, add(0, (0, "history:page", {"paginationOpts": {"numItems": 2, "cursor": None}})))
    page = FunctionResult(True, {"page": []}, encoded_json=b'{"page":[]}', journal="~end")
    t = transition(p, 3, {0: page})
    assert t["modifications"][0]["journal"] == "~end"
