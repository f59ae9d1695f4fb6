"""The HTTP API over a real server, as ConvexHttpClient and convex.http_client call it."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from marketpulse.reactive.gateway import OriginPolicy
from marketpulse.reactive.limits import ConnectionLimits, RunLimits
from marketpulse.reactive.values import decode_ts, encode_ts

from .sync.serving import ADMIN_KEY, Served, serve_store


@pytest.fixture
async def store(tmp_path: Path) -> Any:
    static = tmp_path / "static"
    static.mkdir()
    (static / "index.html").write_text("<html>dashboard</html>")
    (static / "app.js").write_text("console.log(1)")
    async with serve_store(tmp_path / "h.sqlite", static_dir=static) as served:
        yield served


@pytest.fixture
async def http(store: Served) -> Any:
    async with httpx.AsyncClient(base_url=store.url, timeout=10) as client:
        yield client


async def post(http: httpx.AsyncClient, route: str, body: Any, **kw: Any) -> httpx.Response:
    return await http.post(route, content=json.dumps(body), **kw)


async def test_query_mutation_action_with_both_args_shapes(http: httpx.AsyncClient) -> None:
    r = await post(http, "/api/mutation", {"path": "counter:inc", "args": [{"name": "h"}],
                                           "format": "convex_encoded_json"})  # fmt: skip
    assert r.status_code == 200 and r.json() == {"status": "success", "value": 1.0}
    r = await post(
        http, "/api/mutation", {"path": "counter.js:inc", "args": {"name": "h", "by": 2}}
    )
    assert r.json()["value"] == 3.0
    r = await post(http, "/api/query", {"path": "counter:get", "args": {"name": "h"}})
    assert r.json() == {"status": "success", "value": 3.0}
    r = await post(http, "/api/action", {"path": "counter:echo",
                                         "args": [{"value": {"$integer": "AQAAAAAAAAA="}}]})  # fmt: skip
    assert r.json() == {"status": "success", "value": {"$integer": "AQAAAAAAAAA="}}
    r = await post(http, "/api/function", {"path": "counter:inc", "args": {"name": "h"}})
    assert r.json()["value"] == 4.0
    r = await post(http, "/api/run/counter/get", {"args": {"name": "h"}})
    assert r.json() == {"status": "success", "value": 4.0}
    r = await http.get("/api/query", params={"path": "counter:get", "args": '{"name":"h"}'})
    assert r.json() == {"status": "success", "value": 4.0}


async def test_function_errors_are_http_200(http: httpx.AsyncClient) -> None:
    r = await post(http, "/api/query", {"path": "counter:boom", "args": {}})
    assert r.status_code == 200
    assert r.json()["status"] == "error" and "boom on purpose" in r.json()["errorMessage"]
    assert "errorData" not in r.json()
    r = await post(http, "/api/mutation", {"path": "counter:incThenFail", "args": {"name": "e"}})
    assert r.status_code == 200 and r.json()["errorData"] == {"code": "nope", "name": "e"}
    r = await post(http, "/api/query", {"path": "counter:get", "args": {"name": "e"}})
    assert r.json()["value"] == 0.0, "the failed mutation wrote nothing"
    r = await post(http, "/api/query", {"path": "counter:get", "args": {"name": 3}})
    assert "ArgumentValidationError" in r.json()["errorMessage"]
    r = await post(http, "/api/query", {"path": "missing:fn", "args": {}})
    assert r.json()["errorMessage"] == "Could not find public function for 'missing:fn'"


@pytest.mark.parametrize(
    ("route", "raw", "code"),
    [
        ("/api/query", b"{nope", "BadJsonBody"),
        ("/api/query", b"[1]", "BadJsonBody"),
        # A lone surrogate cannot be stored: the JSON parser refuses it as Convex's does.
        ("/api/mutation", b'{"path": "counter:inc", "args": {"name": "x\\ud800"}}', "BadJsonBody"),
        ("/api/query", b'{"args": {}}', "BadPath"),
        ("/api/query", b'{"path": "counter:get", "args": [1, 2]}', "BadArgs"),
        ("/api/query", b'{"path": "counter:get", "args": {"$set": []}}', "BadArgs"),
        ("/api/query", b'{"path": "counter:get", "args": {}, "format": "xml"}', "BadFormat"),
        ("/api/query_at_ts", b'{"path": "counter:get", "args": {}, "ts": "zz"}', "BadTimestamp"),
    ],
)
async def test_malformed_requests_are_4xx_with_code_and_message(
    http: httpx.AsyncClient, route: str, raw: bytes, code: str
) -> None:
    r = await http.post(route, content=raw)
    assert 400 <= r.status_code < 500
    assert r.json()["code"] == code and r.json()["message"]


async def test_internal_functions_need_the_admin_key(http: httpx.AsyncClient) -> None:
    body = {"path": "counter:internalInc", "args": {"name": "i"}}
    r = await post(http, "/api/mutation", body)
    assert (
        r.json()["status"] == "error"
        and "Could not find public function" in r.json()["errorMessage"]
    )
    r = await post(http, "/api/mutation", body, headers={"Authorization": f"Convex {ADMIN_KEY}"})
    assert r.json() == {"status": "success", "value": 1.0}
    r = await post(http, "/api/mutation", body, headers={"Authorization": "Convex wrong"})
    assert r.status_code == 401 and r.json()["code"] == "Unauthenticated"
    assert ADMIN_KEY not in r.text
    r = await post(http, "/api/query", {"path": "counter:get", "args": {"name": "i"}},
                   headers={"Authorization": "Bearer a.b.c"})  # fmt: skip
    assert r.status_code == 401 and "User tokens" in r.json()["message"]
    # The JS admin form with an acting-as identity.
    ident = base64.b64encode(json.dumps({"subject": "u1"}).encode()).decode()
    r = await post(http, "/api/query", {"path": "counter:get", "args": {"name": "i"}},
                   headers={"Authorization": f"Convex {ADMIN_KEY}:{ident}"})  # fmt: skip
    assert r.json() == {"status": "success", "value": 1.0}


async def test_query_ts_and_query_at_ts(http: httpx.AsyncClient) -> None:
    await post(http, "/api/mutation", {"path": "counter:inc", "args": {"name": "t"}})
    ts = (await http.post("/api/query_ts")).json()["ts"]
    assert decode_ts(ts) > 0
    body = {"path": "counter:get", "args": {"name": "t"}, "ts": ts}
    r = await post(http, "/api/query_at_ts", body)
    assert r.json() == {"status": "success", "value": 1.0}
    await post(http, "/api/mutation", {"path": "counter:inc", "args": {"name": "t"}})
    r = await post(http, "/api/query_at_ts", body)
    assert r.status_code == 400 and r.json()["code"] == "QueryTsTooOld"
    r = await post(http, "/api/query_at_ts", {**body, "ts": encode_ts(decode_ts(ts) + 10**15)})
    assert r.json()["value"] == 2.0


async def test_query_at_ts_refuses_a_commit_that_lands_before_its_run(
    http: httpx.AsyncClient, store: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ts is checked when the request arrives, but the query runs after its client's fair
    turn (or off the loop): a commit landing in between must not be answered as the state at
    the requested ts."""
    await post(http, "/api/mutation", {"path": "counter:inc", "args": {"name": "r"}})
    ts = (await http.post("/api/query_ts")).json()["ts"]
    share = store.gateway.query_share
    turn = share.turn

    async def commit_then_turn(address: str) -> None:
        r = await store.engine.run_mutation("counter:inc", {"name": "r"})
        assert r.success
        await turn(address)

    monkeypatch.setattr(share, "turn", commit_then_turn)
    r = await post(http, "/api/query_at_ts", {"path": "counter:get", "args": {"name": "r"},
                                              "ts": ts})  # fmt: skip
    # Before: 200 with 2.0, a value committed after ts.
    assert r.status_code == 400 and r.json()["code"] == "QueryTsTooOld", r.text
    monkeypatch.setattr(share, "turn", turn)
    ts = (await http.post("/api/query_ts")).json()["ts"]
    r = await post(http, "/api/query_at_ts", {"path": "counter:get", "args": {"name": "r"},
                                              "ts": ts})  # fmt: skip
    assert r.json() == {"status": "success", "value": 2.0}


async def test_query_batch_reads_one_snapshot(http: httpx.AsyncClient) -> None:
    await post(http, "/api/mutation", {"path": "counter:inc", "args": {"name": "b", "by": 4}})
    r = await post(http, "/api/query_batch", {"queries": [
        {"path": "counter:get", "args": {"name": "b"}},
        {"path": "counter:boom", "args": {}},
        {"path": "counter:listAll", "args": {}}]})  # fmt: skip
    results = r.json()["results"]
    assert results[0] == {"status": "success", "value": 4.0}
    assert results[1]["status"] == "error"
    assert results[2]["value"] == [{"name": "b", "value": 4.0}]


async def test_clean_json_format_for_run(http: httpx.AsyncClient) -> None:
    r = await post(http, "/api/run/counter/echo",
                   {"args": {"value": {"n": {"$integer": "AgAAAAAAAAA="}, "b": {"$bytes": "AAE="}}}})  # fmt: skip
    assert r.json() == {"status": "success", "value": {"n": "2", "b": "AAE="}}


async def test_cors_default_allows_localhost_without_credentials(http: httpx.AsyncClient) -> None:
    r = await http.options("/api/mutation", headers={
        "Origin": "http://localhost:5173", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,authorization,convex-client"})  # fmt: skip
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == "http://localhost:5173"
    assert "access-control-allow-credentials" not in r.headers
    assert r.headers["access-control-max-age"] == "86400"
    assert "authorization" in r.headers["access-control-allow-headers"]
    # Any other origin, "null" included, gets no CORS headers: browsers keep the answer.
    for origin in ("http://example.test", "null", "file://"):
        r = await post(http, "/api/query", {"path": "counter:get", "args": {"name": "c"}},
                       headers={"Origin": origin})  # fmt: skip
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    # The store's own origin (the page it serves) is always allowed.
    own = str(http.base_url).rstrip("/")
    r = await http.get("/health", headers={"Origin": own})
    assert r.headers["access-control-allow-origin"] == own
    # Never on /metrics, not even for localhost.
    r = await http.get("/metrics", headers={"Origin": "http://localhost:5173"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


async def test_cors_configured_origins_credentials_and_metrics_token(tmp_path: Path) -> None:
    policy = OriginPolicy(("https://app.example.test",), credentials=True)
    async with (
        serve_store(tmp_path / "c.sqlite", origins=policy, metrics_token="m-token") as served,
        httpx.AsyncClient(base_url=served.url, timeout=10) as http,
    ):
        r = await http.get("/health", headers={"Origin": "https://app.example.test"})
        assert r.headers["access-control-allow-origin"] == "https://app.example.test"
        assert r.headers["access-control-allow-credentials"] == "true"
        r = await http.get("/health", headers={"Origin": "http://localhost:5173"})
        assert "access-control-allow-origin" not in r.headers, "a list replaces the default"
        assert (await http.get("/metrics")).status_code == 401
        r = await http.get("/metrics", headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401
        r = await http.get("/metrics", headers={"Authorization": "Bearer m-token"})
        assert r.status_code == 200 and "marketpulse_sync_connections" in r.text
        # With a list configured, the WebSocket checks Origin too (non-browsers send none).
        async with httpx.AsyncClient() as raw:
            r = await raw.get(served.url + "/api/sync", headers={
                "Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                "Origin": "https://evil.example.test"})  # fmt: skip
            assert r.status_code == 403
        client = await served.client()
        await client.close()


async def test_http_input_limits(tmp_path: Path) -> None:
    limits = ConnectionLimits(
        max_body_bytes=4096, max_json_depth=8, max_batch_queries=3, max_header_bytes=2048,
        header_timeout_s=0.5, body_timeout_s=0.5,
    )  # fmt: skip
    async with (
        serve_store(tmp_path / "l.sqlite", limits) as served,
        httpx.AsyncClient(base_url=served.url, timeout=10) as http,
    ):
        big = {"path": "counter:get", "args": {"name": "x" * 5000}}
        r = await post(http, "/api/query", big)
        assert r.status_code == 413 and r.json()["code"] == "RequestTooLarge"

        # A client that sends its body regardless reads the whole answer: the server drops the
        # rest of the body instead of resetting the connection on it.
        port = int(served.url.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /api/query HTTP/1.1\r\nHost: x\r\nContent-Length: 9000000\r\n\r\n")
        await asyncio.sleep(0.2)  # answered by now; the client does not read, and goes on
        for _ in range(20):
            writer.write(b" " * 100_000)
            await writer.drain()
        answer = b""
        async with asyncio.timeout(10):
            while chunk := await reader.read(65536):  # a reset raises ConnectionResetError
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 413") and b"RequestTooLarge" in answer
        writer.close()

        # No Content-Length: counted as the chunks arrive.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /api/query HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(b"".join(b"3e8\r\n" + b" " * 1000 + b"\r\n" for _ in range(5)))
        await writer.drain()
        assert (await reader.readline()).startswith(b"HTTP/1.1 413")
        writer.close()
        # A body that stops arriving: 408 after body_timeout_s.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /api/query HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 5)
        assert line.startswith(b"HTTP/1.1 408")
        writer.close()
        # A head that never completes: 408 after header_timeout_s, then closed.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        await writer.drain()
        assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 408")
        writer.close()
        deep: Any = {"name": "d"}
        for _ in range(20):
            deep = {"x": deep}
        r = await post(http, "/api/query", {"path": "counter:get", "args": deep})
        assert r.status_code == 400 and r.json()["code"] == "JsonTooDeep"
        r = await http.get("/api/query", params={"path": "counter:get", "args": json.dumps(deep)})
        assert r.json()["code"] == "JsonTooDeep"
        queries = [{"path": "counter:get", "args": {"name": "q"}}] * 4
        r = await post(http, "/api/query_batch", {"queries": queries})
        assert r.status_code == 400 and r.json()["code"] == "TooManyQueries"
        r = await post(http, "/api/query_batch", {"queries": queries[:3]})
        assert len(r.json()["results"]) == 3
        # Counted before parsing, as "path" strings: arguments that use the string count too,
        # and the message says what was counted.
        r = await post(http, "/api/query_batch", {"queries": queries[:2], "x": ["path"] * 2})
        assert r.json()["code"] == "TooManyQueries" and '"path" strings' in r.json()["message"]
        # Queries without a path are not strings to count: the parsed length still decides.
        r = await post(http, "/api/query_batch", {"queries": [{}] * 4})
        assert r.json()["code"] == "TooManyQueries" and "4 queries" in r.json()["message"]
        r = await http.get("/health", headers={"X-Big": "y" * 4000})
        assert r.status_code == 431
        assert (await http.get("/health")).status_code == 200


async def test_a_malformed_request_gets_a_json_400_naming_the_problem(store: Served) -> None:
    # It used to get uvicorn's text/plain "Invalid HTTP request received." whatever was wrong,
    # where every other refusal is {"code", "message"} (docs/operations.md).
    port = int(store.url.rsplit(":", 1)[1])
    for request, reason in [
        (b"POST /api/query HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
         b"Transfer-Encoding: chunked\r\n\r\n{}", "Transfer-Encoding can't be present"),
        (b"POST /api/query HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
         "Invalid character in Content-Length"),
    ]:  # fmt: skip
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400") and b"application/json" in head
        error = json.loads(body)
        assert error["code"] == "BadRequest" and reason in error["message"], error
    async with httpx.AsyncClient() as http:
        assert (await http.get(store.url + "/health")).status_code == 200


async def _echo_unread(port: int, size: int) -> socket.socket:
    """A socket that asked for a ``size``-character answer (written in one piece) and keeps
    a 4 KiB receive buffer, so the answer waits in the server."""
    loop = asyncio.get_running_loop()
    body = json.dumps({"path": "counter:echo", "args": {"value": "y" * size}})
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    head = f"POST /api/action HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
    await loop.sock_sendall(sock, head.encode() + body.encode())
    return sock


async def test_a_client_that_stops_reading_its_response_is_dropped(tmp_path: Path) -> None:
    # An unread HTTP response used to be held for as long as the client kept the connection
    # open (20 such clients of /api/query_batch held 1.5 GB); it is dropped after
    # client_send_timeout_s in which it took nothing, as a sync socket is, and a slow client
    # that still reads is not.
    static = tmp_path / "static"
    static.mkdir()
    (static / "index.html").write_text("<html>dashboard</html>")
    (static / "big.bin").write_bytes(b"x" * (4 * 1024 * 1024))
    limits = ConnectionLimits(client_send_timeout_s=0.5)
    loop = asyncio.get_running_loop()
    run_limits = RunLimits(max_result_bytes=8 * 1024 * 1024)
    async with serve_store(
        tmp_path / "s.sqlite", limits, static_dir=static, run_limits=run_limits
    ) as served:
        port = int(served.url.rsplit(":", 1)[1])
        registry = served.gateway.metrics.registry

        async def open_getting_big(rcvbuf: int) -> socket.socket:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setblocking(False)
            await loop.sock_connect(sock, ("127.0.0.1", port))
            await loop.sock_sendall(sock, b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
            return sock

        stuck, slow = await open_getting_big(4096), await open_getting_big(65536)
        received = 0
        for _ in range(15):  # 3 s: six send timeouts, while the slow one reads 320 KB/s
            received += len(await loop.sock_recv(slow, 65536))
            await asyncio.sleep(0.2)
        assert registry.get_sample_value("marketpulse_sync_dropped_clients_total") == 1.0
        got = 0  # what the kernel still had queued, then the end (not the whole response)
        with contextlib.suppress(ConnectionResetError):
            async with asyncio.timeout(5):
                while chunk := await loop.sock_recv(stuck, 65536):
                    got += len(chunk)
        assert got < 4 * 1024 * 1024
        stuck.close()
        async with asyncio.timeout(10):  # the slow reader still gets all of it
            while received < 4 * 1024 * 1024:
                chunk = await loop.sock_recv(slow, 1 << 20)
                assert chunk, "the slow reader was cut off"
                received += len(chunk)
        slow.close()

        # A response written in one piece, taken slowly until uvicorn's keep-alive timer (5 s)
        # closes the connection after it, then not at all: a closing transport waits to flush
        # what it holds, for ever unless dropped.
        sock = await _echo_unread(port, 7_000_000)
        for _ in range(30):  # 6 s at 160 KB/s: 1 MB of the 7
            await loop.sock_recv(sock, 32768)
            await asyncio.sleep(0.2)
        assert registry.get_sample_value("marketpulse_sync_dropped_clients_total") == 1.0
        async with asyncio.timeout(5):
            while registry.get_sample_value("marketpulse_sync_dropped_clients_total") < 2.0:
                await asyncio.sleep(0.1)
        sock.close()


async def test_past_the_unsent_budget_the_largest_unread_responses_are_dropped(
    tmp_path: Path,
) -> None:
    # Each stuck client's answer is held until client_send_timeout_s (here far off); the
    # server-wide budget drops the largest holders as soon as they together pass it.
    limits = ConnectionLimits(client_send_timeout_s=60.0, max_unsent_bytes=5_000_000)
    run_limits = RunLimits(max_result_bytes=8 * 1024 * 1024)
    async with serve_store(tmp_path / "s.sqlite", limits, run_limits=run_limits) as served:
        port = int(served.url.rsplit(":", 1)[1])
        registry = served.gateway.metrics.registry

        def dropped() -> float:
            return registry.get_sample_value("marketpulse_sync_dropped_clients_total") or 0.0

        stuck = []
        for size in (3_000_000, 3_100_000, 1_000_000):
            stuck.append(await _echo_unread(port, size))
            await asyncio.sleep(0.5)
        # 3.0 + 3.1 MB passed 5 MB: the 3.1 went; 3.0 + 1.0 is within it.
        assert dropped() == 1.0
        async with httpx.AsyncClient(base_url=served.url) as http:
            answer = await post(http, "/api/query", {"path": "counter:get", "args": {"name": "b"}})
            assert answer.json()["status"] == "success"
        for sock in stuck:
            sock.close()


async def test_health_metrics_static_and_unknown_routes(http: httpx.AsyncClient) -> None:
    assert (await http.get("/health")).json()["status"] == "ok"
    await post(http, "/api/mutation", {"path": "counter:inc", "args": {"name": "m"}})
    metrics = (await http.get("/metrics")).text
    assert "marketpulse_mutations_committed_total 1.0" in metrics
    assert "marketpulse_sync_connections" in metrics
    # The commit path's stage timings: one group written, every stage present.
    assert "marketpulse_commit_groups_total 1.0" in metrics
    for stage in ("execute", "write", "apply", "rerun"):
        assert f'marketpulse_commit_stage_seconds_total{{stage="{stage}"}}' in metrics
    # counter:inc is durable: nothing answered is left unwritten.
    assert "marketpulse_unflushed_commits 0.0" in metrics
    assert (await http.get("/")).text == "<html>dashboard</html>"
    assert (await http.get("/app.js")).text == "console.log(1)"
    assert (await http.get("/markets/XYZ")).text == "<html>dashboard</html>", "SPA fallback"
    # A build asset that is not there (a page from before a deploy) is a 404, not the page.
    assert (await http.get("/assets/index-0ld.js")).status_code == 404
    r = await http.post("/api/nope", content=b"{}")
    assert r.status_code == 404 and r.json()["code"] == "NotFound"
    # A deployment URL with a trailing slash makes clients request "//api/...".
    r = await http.post(str(http.base_url).rstrip("/") + "//api/query",
                        content=b'{"path":"counter:get","args":{"name":"m"}}')  # fmt: skip
    assert r.json() == {"status": "success", "value": 1.0}


async def test_metrics_limited_to_named_series(store: Served, http: httpx.AsyncClient) -> None:
    asked = {"marketpulse_mutations_committed_total", "marketpulse_sync_connections"}
    r = await http.get("/metrics", params=[("name[]", name) for name in sorted(asked)])
    names = {line.split("{")[0].split(" ")[0] for line in r.text.splitlines() if line[:1] != "#"}
    assert names == asked
    # A collector of its own runs only when one of its names is asked for.
    store.gateway.metrics.registry.register(_SlowCollector())
    started = time.monotonic()
    r = await http.get("/metrics", params={"name[]": "marketpulse_sync_connections"})
    assert time.monotonic() - started < 0.4, "a collector of other names ran"
    assert "test_slow_collector" not in r.text
    r = await http.get("/metrics", params={"name[]": "test_slow_collector"})
    assert "test_slow_collector 1.0" in r.text


class _SlowCollector(Collector):
    """A collector that takes 0.5 s, as a huge registry would."""

    def collect(self) -> Any:
        time.sleep(0.5)
        yield GaugeMetricFamily("test_slow_collector", "slow", 1.0)


async def test_metrics_render_off_the_event_loop(store: Served, http: httpx.AsyncClient) -> None:
    store.gateway.metrics.registry.register(_SlowCollector())
    scrape = asyncio.create_task(http.get("/metrics"))
    await asyncio.sleep(0.1)  # the scrape is rendering
    assert (await http.get("/health")).status_code == 200
    # The loop kept serving while the scrape rendered (it would answer after it otherwise).
    assert not scrape.done(), "the scrape held the event loop until it was rendered"
    assert "test_slow_collector 1.0" in (await scrape).text
