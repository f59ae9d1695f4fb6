"""The sync WebSocket's limits over a real server: every one refuses the offender with a clear
error while a subscriber on another socket keeps getting its pushes."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from marketpulse.reactive.limits import ConnectionLimits
from marketpulse.reactive.sync.client import LightSyncClient, ServerError

from .serving import Served, serve_store
from .test_connection import inc

LIMITS = ConnectionLimits(
    max_message_bytes=64 * 1024,
    max_fragments=16,
    max_queries=50,
    max_query_changes=20,
    max_query_set_bytes=50_000,
    max_json_depth=8,
    connect_timeout_s=1.0,
    message_timeout_s=1.0,
    idle_timeout_s=1.5,
    ping_interval_s=0.3,
)


@pytest.fixture
async def store(tmp_path: Path) -> Any:
    async with serve_store(tmp_path / "l.sqlite", LIMITS) as served:
        yield served


async def bystander(store: Served, name: str) -> tuple[LightSyncClient, int]:
    c = await store.client()
    q = await c.subscribe("counter:get", {"name": name})
    await c.wait_for(q)
    return c, q


async def still_served(store: Served, c: LightSyncClient, q: int, name: str) -> None:
    value = await inc(store, name)
    assert await c.wait_for(q, lambda v: v == value) == value
    assert c.failure is None


async def failure_of(c: LightSyncClient) -> BaseException:
    for _ in range(300):
        if c.failure is not None:
            return c.failure
        await asyncio.sleep(0.01)
    raise AssertionError("no failure")


def modify(adds: range, base: int = 0) -> str:
    mods = [
        {"type": "Add", "queryId": i, "udfPath": "counter:get", "args": [{"name": f"n{i}"}]}
        for i in adds
    ]
    return orjson.dumps(
        {"type": "ModifyQuerySet", "baseVersion": base, "newVersion": base + 1,
         "modifications": mods}
    ).decode()  # fmt: skip


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        # 20,000 characters, 80,000 bytes: the limit counts bytes.
        ('{"type":"Event","x":"' + "\U0001f600" * 20_000 + '"}', "MessageTooLarge"),
        (modify(range(21)), "TooManyQueries"),
        (
            '{"type":"Mutation","requestId":1,"udfPath":"counter:inc","args":['
            + '{"a":' * 40
            + "1"
            + "}" * 40
            + "]}",
            "JsonTooDeep",
        ),
        # 1,000 levels: was a RecursionError that dropped the socket with no FatalError.
        *(
            (
                '{"type":"Mutation","requestId":1,"udfPath":"x","args":['
                + "[" * depth
                + "]" * depth
                + "]}",
                "JsonTooDeep",
            )
            for depth in (1000,)
        ),
    ],
    ids=["utf8-bytes", "query-changes", "deep-args", "very-deep-args"],
)
async def test_input_limits_fail_the_offender_only(store: Served, payload: str, error: str) -> None:
    other, q = await bystander(store, "in")
    bad = await store.client()
    await bad.send_raw(payload)
    failure = await failure_of(bad)
    assert isinstance(failure, ServerError) and error in str(failure)
    await still_served(store, other, q, "in")
    await other.close()
    await bad.close()


async def test_query_set_cap_counts_across_messages(store: Served) -> None:
    c = await store.client()
    for step in range(2):
        await c.send_raw(modify(range(step * 20, step * 20 + 20), base=step))
    await asyncio.sleep(0.2)
    assert c.failure is None
    await c.send_raw(modify(range(40, 60), base=2))
    assert "TooManyQueries" in str(await failure_of(c))
    await c.close()


async def test_query_set_bytes_are_held_per_query_across_messages(store: Served) -> None:
    def change(base: int, adds: dict[int, int], removes: tuple[int, ...] = ()) -> str:
        mods: list[dict[str, Any]] = [
            {"type": "Add", "queryId": i, "udfPath": "counter:get",
             "args": [{"name": f"n{i}", "pad": "x" * size}]}
            for i, size in adds.items()
        ]  # fmt: skip
        mods += [{"type": "Remove", "queryId": i} for i in removes]
        message = {"type": "ModifyQuerySet", "baseVersion": base, "newVersion": base + 1}
        return orjson.dumps({**message, "modifications": mods}).decode()

    other, q = await bystander(store, "set-bytes")
    c = await store.client()
    await c.send_raw(change(0, {0: 30_000, 1: 10}))
    await c.send_raw(change(1, {}, removes=(1,)))  # the small one goes; the large one stays
    await c.send_raw(change(2, {2: 10_000}))
    await asyncio.sleep(0.2)
    assert c.failure is None  # ~40 KB held: within 50,000
    await c.send_raw(change(3, {3: 15_000}))
    failure = await failure_of(c)
    assert isinstance(failure, ServerError) and "QuerySetTooLarge" in str(failure)
    await still_served(store, other, q, "set-bytes")
    await other.close()
    await c.close()

    freed = await store.client()  # removing a query frees its bytes
    await freed.send_raw(change(0, {0: 30_000}))
    await freed.send_raw(change(1, {1: 30_000}, removes=(0,)))
    await asyncio.sleep(0.2)
    assert freed.failure is None
    await freed.close()


def frame(opcode: int, payload: bytes, fin: bool) -> bytes:
    head = (0x80 if fin else 0) | opcode
    mask = b"\0\0\0\0"
    if len(payload) < 126:
        return bytes((head, 0x80 | len(payload))) + mask + payload
    if len(payload) < 65536:
        return struct.pack("!BBH", head, 0x80 | 126, len(payload)) + mask + payload
    return struct.pack("!BBQ", head, 0x80 | 127, len(payload)) + mask + payload


async def raw_socket(store: Served) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    port = int(store.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"GET /api/sync HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    return reader, writer


async def read_until(reader: asyncio.StreamReader, marker: bytes) -> bytes:
    """What the server sends until ``marker`` appears (or it closes)."""
    data = b""
    async with asyncio.timeout(10):
        while marker not in data:
            chunk = await reader.read(65536)
            if not chunk:
                break
            data += chunk
    return data


async def test_too_many_fragments(store: Served) -> None:
    other, q = await bystander(store, "frag")
    reader, writer = await raw_socket(store)
    writer.write(frame(0x1, b"{", fin=False))
    for _ in range(LIMITS.max_fragments + 5):
        writer.write(frame(0x0, b" ", fin=False))
    await writer.drain()
    assert b"TooManyFragments" in await read_until(reader, b"TooManyFragments")
    writer.close()
    await still_served(store, other, q, "frag")
    await other.close()


async def test_a_client_still_sending_after_its_refusal_reads_the_error(store: Served) -> None:
    # The server stops taking input at the refusal; closing with input unread would make the
    # kernel reset the connection, which can destroy the FatalError before it is read.
    reader, writer = await raw_socket(store)
    writer.write(frame(0x1, b"{", fin=False))
    writer.write(frame(0x0, b" ", fin=False) * (LIMITS.max_fragments + 1))
    await writer.drain()
    await asyncio.sleep(0.2)  # refused by now; the client does not read, and goes on
    for _ in range(20):
        writer.write(frame(0x0, b" " * 100, fin=False) * 100)
        await writer.drain()
    data = b""
    async with asyncio.timeout(10):
        while chunk := await reader.read(65536):  # a reset raises ConnectionResetError
            data += chunk
    assert b"TooManyFragments" in data
    writer.close()


async def test_fragments_add_up_to_one_message_in_bytes(store: Served) -> None:
    reader, writer = await raw_socket(store)
    writer.write(frame(0x1, b'{"type":"Event","x":"', fin=False))
    writer.write(frame(0x0, b"y" * 40_000, fin=False))
    writer.write(frame(0x0, b"y" * 40_000 + b'"}', fin=True))
    await writer.drain()
    assert b"MessageTooLarge" in await read_until(reader, b"MessageTooLarge")
    writer.close()


@pytest.mark.parametrize("partial", [b"frame", b"fragments"])
async def test_unfinished_message_times_out(store: Served, partial: bytes) -> None:
    other, q = await bystander(store, "slow")
    reader, writer = await raw_socket(store)
    writer.write(frame(0x1, orjson.dumps({"type": "Connect", "sessionId": "s"}), fin=True))
    if partial == b"frame":
        writer.write(frame(0x1, b"x" * 1000, fin=True)[:500])  # half a frame
    else:
        writer.write(frame(0x1, b"{", fin=False))
    await writer.drain()
    assert b"MessageTimeout" in await read_until(reader, b"MessageTimeout")
    writer.close()
    await still_served(store, other, q, "slow")
    await other.close()


async def test_over_the_unfinished_bytes_budget_the_largest_holders_go(tmp_path: Path) -> None:
    """Two sockets hold most of the server's budget for unfinished messages; a third sends one
    ordinary message in two pieces, and crossing the budget closes a holder, not it."""
    limits = ConnectionLimits(max_message_bytes=256 * 1024, max_partial_bytes=200_000)
    async with serve_store(tmp_path / "p.sqlite", limits) as store:
        holders = []
        for _ in range(2):
            reader, writer = await raw_socket(store)
            writer.write(frame(0x1, orjson.dumps({"type": "Connect", "sessionId": "h"}), True))
            writer.write(frame(0x1, b"x" * 100_000, fin=True)[:90_000])
            await writer.drain()
            holders.append((reader, writer))
        await asyncio.sleep(0.2)
        reader, writer = await raw_socket(store)
        writer.write(frame(0x1, orjson.dumps({"type": "Connect", "sessionId": "v"}), True))
        body = orjson.dumps(
            {"type": "Mutation", "requestId": 0, "udfPath": "counter:inc",
             "args": [{"name": "v" * 60_000}]}
        )  # fmt: skip
        whole = frame(0x1, body, fin=True)
        writer.write(whole[:50_000])
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.write(whole[50_000:])
        await writer.drain()
        answer = await read_until(reader, b"MutationResponse")
        assert b"MutationResponse" in answer and b"FatalError" not in answer
        closed = 0
        for r, _ in holders:
            with contextlib.suppress(TimeoutError):  # still held: nothing to read
                closed += b"Overloaded" in await asyncio.wait_for(r.read(65536), 1.0)
        assert closed == 1, "one holder was enough"
        for _, w in [*holders, (reader, writer)]:
            w.close()


async def test_silent_after_upgrade_and_idle_sockets_are_closed(store: Served) -> None:
    reader, writer = await raw_socket(store)
    assert b"ConnectTimeout" in await read_until(reader, b"ConnectTimeout")
    writer.close()
    async with connect(store.ws_url) as ws:
        await ws.send(orjson.dumps({"type": "Connect", "sessionId": "idle"}).decode())
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                message = await asyncio.wait_for(ws.recv(), 10)
                # Not the client's fault: no FatalError, which would stop the official
                # clients for good; a plain close, after which they reconnect.
                assert "FatalError" not in message
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    assert closed.value.rcvd.reason.startswith("IdleTimeout")
    # A subscriber is never idle, however quiet.
    c, q = await bystander(store, "quiet")
    await asyncio.sleep(LIMITS.idle_timeout_s + 1.5)
    await still_served(store, c, q, "quiet")
    await c.close()


async def test_large_query_set_is_paced_and_others_are_served(tmp_path: Path) -> None:
    limits = ConnectionLimits(max_queries=5000, max_query_changes=5000, work_slice_s=0.002)
    async with serve_store(tmp_path / "p.sqlite", limits) as store:
        other, q = await bystander(store, "pace")
        big = await store.client()
        await big.send_raw(modify(range(5000)))
        # While the 5,000 first runs go on, the other socket's pushes still come through.
        await still_served(store, other, q, "pace")

        def answered() -> int:
            return sum(
                m["type"] == "QueryUpdated" for t in big.transitions for m in t.modifications
            )

        for _ in range(500):  # every first run answered, once, within 10 s
            if answered() >= 5000:
                break
            await asyncio.sleep(0.02)
        assert answered() == 5000
        assert big.transitions[-1].end["querySet"] == 1
        await big.close()
        await other.close()


async def test_mutation_ids_of_another_call_are_refused(store: Served) -> None:
    victim = await store.client()
    r1 = await victim.request("Mutation", "counter:inc", {"name": "mine"}, request_id=3)
    assert r1["success"]
    # Same session and request id, another function or other arguments: refused, not replayed.
    thief = await LightSyncClient(store.ws_url, session_id=victim.session_id).connect()
    r2 = await thief.request("Mutation", "counter:inc", {"name": "theirs"}, request_id=3)
    assert not r2["success"] and "MutationReplayRejected" in r2["result"]
    # Under admin identity, same function and arguments: another caller, refused too.
    await thief.authenticate("Admin", store.gateway.auth._key.decode())  # type: ignore[union-attr]
    r3 = await thief.request("Mutation", "counter:inc", {"name": "mine"}, request_id=3)
    assert not r3["success"] and "MutationReplayRejected" in r3["result"]
    # The victim's own re-send still gets its original result, untouched.
    again = await LightSyncClient(store.ws_url, session_id=victim.session_id).connect()
    r4 = await again.request("Mutation", "counter:inc", {"name": "mine"}, request_id=3)
    assert r4["result"] == r1["result"] and r4["ts"] == r1["ts"]
    for c in (victim, thief, again):
        await c.close()


async def test_a_large_query_set_over_the_cap_is_refused_before_it_is_decoded(
    tmp_path: Path,
) -> None:
    limits = ConnectionLimits(max_message_bytes=4 * 1024 * 1024, max_query_changes=20)
    async with serve_store(tmp_path / "big.sqlite", limits) as served:
        other, q = await bystander(served, "big")
        # 21 modifications in ~1 MB: counted in the raw bytes, so the invalid UTF-8 (which
        # decoding would report instead) is never reached.
        pad = "x" * (1024 * 1024)
        over = modify(range(21)).replace('"n0"', f'"{pad}"').encode() + b"\xff"
        bad = await served.client()
        await bad.send_raw(over, text=True)
        failure = await failure_of(bad)
        assert isinstance(failure, ServerError) and "TooManyQueries" in str(failure), failure
        assert "over 20 modifications" in str(failure)
        # At the cap and as large: decoded and served as usual.
        at_cap = await served.client()
        await at_cap.send_raw(modify(range(20)).replace('"n0"', f'"{pad}"'))
        await asyncio.sleep(0.3)
        assert at_cap.failure is None
        await still_served(served, other, q, "big")
        for c in (other, bad, at_cap):
            await c.close()
