"""A real ``marketpulse serve`` and the official Convex clients against it, unchanged.

npm ``convex`` (tests/js, driven through tests/js/driver.mjs) and PyPI ``convex`` 0.8.1.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
from convex import ConvexClient
from convex.http_client import ConvexHttpClient

from marketpulse.reactive.sync.client import LightSyncClient, RawSubscriber
from marketpulse.testing import AdminClient, StoreProcess

from .js_driver import JsDriver, node_available

pytestmark = pytest.mark.e2e

needs_node = pytest.mark.skipif(
    not node_available(), reason="node and tests/js/node_modules are needed (npm ci in tests/js)"
)


ADMIN_KEY = "e2e-admin-key-" + "0" * 16


def example_store(db_path: Path, **options: Any) -> StoreProcess:
    """A store serving tests/e2e/example_functions."""
    options.setdefault("admin_key", ADMIN_KEY)
    return StoreProcess(
        db_path,
        functions="example_functions",
        pythonpath=[Path(__file__).parent],
        **options,
    )


def call(store: StoreProcess, kind: Literal["query", "mutation"], path: str, args: Any) -> Any:
    """One call over HTTP as an anonymous user; the store's whole answer."""
    with AdminClient(store.url, timeout=10) as client:
        return client.call(kind, path, args)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StoreProcess]:
    with example_store(tmp_path / "store.sqlite") as proc:
        yield proc


def is_update(sub: str, value: Any) -> Any:
    return lambda e: e["event"] == "update" and e["id"] == sub and e["value"] == value


@needs_node
def test_js_subscriber_sees_http_and_websocket_mutations(store: StoreProcess) -> None:
    js = JsDriver(store.url)
    try:
        js.send(cmd="subscribe", id="s", path="counter:get", args={"name": "js"})
        js.wait_for(is_update("s", 0))
        # ConvexHttpClient mutation -> pushed to the ConvexClient subscriber.
        r = js.call("mutation", "http", "counter:inc", {"name": "js", "by": 2}, "m1")
        assert r == {"event": "result", "rid": "m1", "value": 2}
        js.wait_for(is_update("s", 2))
        # WebSocket mutation: resolves, and the subscriber has seen the write by then.
        r = js.call("mutation", "ws", "counter:inc", {"name": "js"}, "m2")
        assert r == {"event": "result", "rid": "m2", "value": 3}
        # The update was delivered before the mutation resolved (it is already waiting).
        assert {"event": "update", "id": "s", "value": 3} in js.backlog, js.backlog
        # Errors surface as the client's own errors.
        r = js.call("query", "ws", "counter:boom", {}, "q1")
        assert r["event"] == "failed" and "boom on purpose" in r["message"]
        r = js.call("mutation", "ws", "counter:incThenFail", {"name": "js"}, "m3")
        assert r["event"] == "failed" and r["data"] == {"code": "nope", "name": "js"}
        r = js.call("mutation", "ws", "counter:internalInc", {"name": "js"}, "m4")
        assert r["event"] == "failed" and "Could not find public function" in r["message"]
        r = js.call("action", "ws", "counter:echo", {"value": {"$integer": "BwAAAAAAAAA="}}, "a1")
        assert r == {"event": "result", "rid": "a1", "value": {"$integer": "BwAAAAAAAAA="}}
    finally:
        js.close()
    noise = [line for line in js.stderr if "took more than" in line or "Invalid" in line]
    assert not noise, noise


@needs_node
def test_js_admin_client_calls_internal_mutations(store: StoreProcess) -> None:
    js = JsDriver(store.url, admin_key=ADMIN_KEY)
    try:
        r = js.call("mutation", "ws", "counter:internalInc", {"name": "adm"}, "m1")
        assert r == {"event": "result", "rid": "m1", "value": 1}
        r = js.call("mutation", "http", "counter:internalInc", {"name": "adm"}, "m2")
        assert r == {"event": "result", "rid": "m2", "value": 2}
    finally:
        js.close()


@needs_node
def test_js_client_reconnects_after_the_server_is_killed(store: StoreProcess) -> None:
    js = JsDriver(store.url)
    try:
        js.send(cmd="subscribe", id="s", path="counter:get", args={"name": "rs"})
        js.wait_for(is_update("s", 0))
        assert js.call("mutation", "ws", "counter:inc", {"name": "rs", "by": 5}, "m1")["value"] == 5
        js.wait_for(is_update("s", 5))
        store.kill()  # SIGKILL: no goodbye to anyone
        store.start()  # the same port and file
        # A write from elsewhere after the restart reaches the same subscription.
        assert call(store, "mutation", "counter:inc", {"name": "rs"})["value"] == 6.0
        js.wait_for(is_update("s", 6), timeout=40)
        # And the WebSocket client's own mutations work again.
        r = js.call(
            "mutation",
            "ws",
            "counter:inc",
            {"name": "rs"},
            "m2",
        )
        assert r == {"event": "result", "rid": "m2", "value": 7}
        js.wait_for(is_update("s", 7))
    finally:
        js.close()


def test_python_client_subscribe_mutate_receive(store: StoreProcess) -> None:
    client = ConvexClient(store.url)
    assert client.query("counter:get", {"name": "py"}) == 0.0
    sub = client.subscribe("counter:get", {"name": "py"})
    values = iter(sub)
    assert next(values) == 0.0
    got: list[Any] = []

    def write_from_elsewhere() -> None:
        other = ConvexClient(store.url)
        got.append(other.mutation("counter:inc", {"name": "py", "by": 3}))

    writer = threading.Thread(target=write_from_elsewhere)
    writer.start()
    writer.join(20)
    assert got == [3.0]
    assert next(values) == 3.0
    assert client.mutation("counter:inc", {"name": "py"}) == 4.0
    assert next(values) == 4.0
    sub.unsubscribe()
    with pytest.raises(Exception, match="boom on purpose"):
        client.query("counter:boom", {})


def test_python_client_internal_mutation_needs_admin_auth(store: StoreProcess) -> None:
    anonymous = ConvexClient(store.url)
    with pytest.raises(Exception, match="Could not find public function"):
        anonymous.mutation("counter:internalInc", {"name": "pa"})
    assert anonymous.query("counter:get", {"name": "pa"}) == 0.0, "nothing ran"
    admin = ConvexClient(store.url)
    admin.set_admin_auth(ADMIN_KEY)
    assert admin.mutation("counter:internalInc", {"name": "pa"}) == 1.0
    assert anonymous.query("counter:get", {"name": "pa"}) == 1.0


def test_python_http_client(store: StoreProcess) -> None:
    http = ConvexHttpClient(store.url)
    assert http.mutation("counter:inc", {"name": "ph", "by": 2}) == 2.0
    assert http.query("counter:get", {"name": "ph"}) == 2.0
    assert http.action("counter:echo", {"value": "hi"}) == "hi"
    from convex import ConvexError

    with pytest.raises(ConvexError) as err:
        http.mutation("counter:incThenFail", {"name": "ph"})
    assert err.value.data == {"code": "nope", "name": "ph"}
    with pytest.raises(Exception, match="Could not find public function"):
        http.mutation("counter:internalInc", {"name": "ph"})
    http.set_admin_auth(ADMIN_KEY)
    assert http.mutation("counter:internalInc", {"name": "ph"}) == 3.0


def next_within(values: Iterator[Any], timeout: float = 20.0) -> Any:
    """next() on a blocking client iterator, failing instead of hanging."""
    box: list[Any] = []
    reader = threading.Thread(target=lambda: box.append(next(values)), daemon=True)
    reader.start()
    reader.join(timeout)
    assert box, f"no value within {timeout}s"
    return box[0]


def test_light_client_sees_what_the_official_client_sees(store: StoreProcess) -> None:
    """The light spec client used by bench/sync_latency.py behaves like ConvexClient."""
    official = ConvexClient(store.url)
    sub = official.subscribe("counter:listAll", {})
    official_values = iter(sub)
    assert next_within(official_values) == []

    async def light() -> list[Any]:
        c = await LightSyncClient(LightSyncClient.ws_url(store.url)).connect()
        q = await c.subscribe("counter:listAll", {})
        seen = [await c.wait_for(q)]
        for i in range(1, 4):
            r = await c.request("Mutation", "counter:inc", {"name": "l", "by": 1})
            assert r["success"]
            seen.append(await c.wait_for(q, lambda v, i=i: v and v[0]["value"] == float(i)))
        await c.close()
        return seen

    light_seen = asyncio.run(light())
    assert light_seen == [[], *([{"name": "l", "value": float(i)}] for i in range(1, 4))]
    # The official client may skip intermediate states; it must reach the same final one,
    # passing only through states the light client also saw.
    official_seen = []
    while not official_seen or official_seen[-1] != light_seen[-1]:
        official_seen.append(next_within(official_values))
    assert all(v in light_seen for v in official_seen)
    sub.unsubscribe()


def test_raw_subscriber_sees_what_the_official_client_sees(store: StoreProcess) -> None:
    """The lean client bench/sync_latency.py uses for its subscribers behaves the same way."""
    official = ConvexClient(store.url)
    sub = official.subscribe("counter:get", {"name": "raw"})
    official_values = iter(sub)
    assert next_within(official_values) == 0.0

    async def raw() -> list[Any]:
        seen: list[Any] = []
        loop = asyncio.get_running_loop()
        _, client = await loop.create_connection(
            lambda: RawSubscriber(
                LightSyncClient.ws_url(store.url),
                "counter:get",
                {"name": "raw"},
                lambda m, _t: seen.extend(mod["value"] for mod in m["modifications"]),
            ),
            "127.0.0.1",
            store.port,
        )
        await asyncio.wait_for(client.subscribed, 10)
        for _ in range(3):
            await asyncio.to_thread(call, store, "mutation", "counter:inc", {"name": "raw"})
        for _ in range(200):
            if seen and seen[-1] == 3.0:
                break
            await asyncio.sleep(0.02)
        client.close()
        assert client.failure is None
        return seen

    raw_seen = asyncio.run(raw())
    assert raw_seen[0] == 0.0 and raw_seen[-1] == 3.0
    assert raw_seen == sorted(raw_seen), "every state in commit order"
    official_seen = []
    while not official_seen or official_seen[-1] != 3.0:
        official_seen.append(next_within(official_values))
    assert set(official_seen) <= set(raw_seen)
    sub.unsubscribe()


def test_sockets_opening_and_closing_log_nothing_at_info(store: StoreProcess) -> None:
    """A node with 100,000 sockets must not write a log line per socket: websockets' own
    "connection open" / "connection closed" stay below the default level."""

    async def open_and_close() -> None:
        loop = asyncio.get_running_loop()
        subs = []
        for _ in range(5):
            _, sub = await loop.create_connection(
                lambda: RawSubscriber(
                    LightSyncClient.ws_url(store.url), "counter:get", {"name": "q"}, lambda m, t: 0
                ),
                "127.0.0.1",
                store.port,
            )
            await asyncio.wait_for(sub.subscribed, 10)
            subs.append(sub)
        for sub in subs:
            sub.close()
        await asyncio.sleep(0.5)

    asyncio.run(open_and_close())
    log = store.log_path.read_text()
    assert "connection open" not in log and "connection closed" not in log


@needs_node
def test_clients_take_a_transition_split_for_size(store: StoreProcess) -> None:
    """Four 1.5 MB results changed by one commit exceed the 4 MiB Transition cap: the server
    splits them into a continuous chain that both official clients accept."""
    sizes = [1_500_000 + i for i in range(4)]
    py = ConvexClient(store.url)
    subs = [iter(py.subscribe("counter:padded", {"name": "sp", "size": n})) for n in sizes]
    assert all(next_within(s)["value"] == 0.0 for s in subs)
    js = JsDriver(store.url)
    try:
        for n in sizes:
            js.send(
                cmd="subscribe", id=str(n), path="counter:padded", args={"name": "sp", "size": n}
            )
        for n in sizes:
            js.wait_for(lambda e, n=n: e["event"] == "update" and e["id"] == str(n))

        async def watch() -> list[Any]:
            c = await LightSyncClient(LightSyncClient.ws_url(store.url)).connect()
            qs = [await c.subscribe("counter:padded", {"name": "sp", "size": n}) for n in sizes]
            for q in qs:
                await c.wait_for(q)
            before = len(c.transitions)
            await asyncio.to_thread(call, store, "mutation", "counter:inc", {"name": "sp"})
            for q in qs:
                await c.wait_for(q, lambda v: v["value"] == 1.0)
            await c.close()
            return c.transitions[before:]

        frames = asyncio.run(watch())
        assert len(frames) >= 2 and frames[1].start == frames[1].end, "split into a chain"
        for s in subs:
            v = next_within(s)
            while v["value"] != 1.0:
                v = next_within(s)
        for n in sizes:
            e = js.wait_for(lambda e, n=n: e["event"] == "update" and e["id"] == str(n)
                            and e["value"]["value"] == 1)  # fmt: skip
            assert len(e["value"]["pad"]) == n
    finally:
        js.close()


def test_serve_shuts_down_cleanly_on_sigterm(tmp_path: Path) -> None:
    proc = example_store(tmp_path / "term.sqlite").start()
    assert call(proc, "mutation", "counter:inc", {"name": "t"})["value"] == 1.0
    assert proc.stop() == 0
    assert "Traceback" not in proc.log()
    with example_store(tmp_path / "term.sqlite") as again:
        assert call(again, "query", "counter:get", {"name": "t"})["value"] == 1.0


def test_generated_admin_key_is_printed_once_and_never_logged(tmp_path: Path) -> None:
    # An empty key makes serve generate one and print it on its console (this log).
    log = tmp_path / "serve.log"
    with example_store(tmp_path / "k" / "store.sqlite", admin_key="", log_path=log) as store:
        line = log.read_text().splitlines()[0]
        key = line.strip().rsplit(" ", 1)[-1]
        assert len(key) >= 32, line
        admin = ConvexHttpClient(store.url)
        admin.set_admin_auth(key)
        assert admin.mutation("counter:internalInc", {"name": "k"}) == 1.0
    assert log.read_text().count(key) == 1, "printed once, then never again"
    assert (tmp_path / "k" / "store.sqlite").exists(), "the db directory was created"
    assert key.encode() not in b"".join(p.read_bytes() for p in (tmp_path / "k").iterdir())
