"""`marketpulse record` as a subprocess against a real local exchange."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from .stub_exchange import StubExchange

A, B = "KXBTCD-25AUG0517-T114999.99", "KXETHD-25AUG0517-T3749.99"


@pytest.fixture
async def exchange() -> AsyncIterator[StubExchange]:
    ex = StubExchange()
    ex.add_market(A, {"0.4000": "10"}, {"0.5500": "5"})
    ex.add_market(B, {}, {"0.9925": "7.5"})
    await ex.start()
    yield ex
    await ex.stop()


async def test_record_writes_every_frame_with_receive_time(
    exchange: StubExchange, tmp_path: Path
) -> None:
    key = tmp_path / "k.pem"
    key.write_bytes(
        exchange.creds._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    out = tmp_path / "rec.jsonl"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "marketpulse",
        "record",
        "--url",
        exchange.url,
        "--markets",
        f"{A},{B}",
        "--out",
        str(out),
        "--duration",
        "1.5",
        "--key-id",
        exchange.creds.key_id,
        "--private-key",
        str(key),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    # While it records, the exchange moves a book.
    async with asyncio.timeout(20):
        while not exchange.conns or not any(c.sids for c in exchange.conns):
            await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)
    await exchange.delta(A, "yes", "0.4100", "2")
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    frames = [json.loads(x["frame"]) for x in lines]
    assert all(isinstance(x["ts_ms"], int) and x["ts_ms"] > 1_700_000_000_000 for x in lines)
    assert [x["ts_ms"] for x in lines] == sorted(x["ts_ms"] for x in lines)
    types = [f["type"] for f in frames]
    assert types.count("subscribed") == 3 and types.count("orderbook_snapshot") == 2
    assert (
        frames[-1]["type"] == "orderbook_delta" and frames[-1]["msg"]["price_dollars"] == "0.4100"
    )
    assert "recorded" in err.decode() and str(len(lines)) in err.decode()
    assert "PRIVATE" not in err.decode()


async def test_record_refuses_bad_credentials(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "marketpulse",
        "record",
        "--url",
        "ws://127.0.0.1:9/x",
        "--markets",
        A,
        "--out",
        str(tmp_path / "o.jsonl"),
        "--duration",
        "1",
        "--key-id",
        "k",
        "--private-key",
        str(bad),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert "could not load the Kalshi private key" in err.decode() and "AAAA" not in err.decode()
