"""``marketpulse record``: write every frame a Kalshi WS v2 feed sends to a JSONL file.

One line per received frame: ``{"ts_ms": <receive time, epoch ms>, "frame": "<raw text>"}``.
The simulator replays such files (``marketpulse simulate --replay FILE``).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from pathlib import Path
from typing import IO, Annotated

import orjson
import typer

# The package's names load on first use: every ``marketpulse`` command imports this module (to
# register ``record``) and need not load the feed and the REST client (websockets, httpx).
from marketpulse import kalshi
from marketpulse._aio import cancel_and_wait

SIM_WS_URL = "ws://127.0.0.1:8765/trade-api/ws/v2"


def _ws_url(url: str) -> str:
    return SIM_WS_URL if url == "sim" else kalshi.resolve_ws_url(url)


def _rest_url_for(ws_url: str) -> str:
    base = ws_url.replace("wss://", "https://", 1).replace("ws://", "http://", 1)
    base = base.replace("external-api-ws.", "external-api.", 1)
    return base.replace("/trade-api/ws/v2", "/trade-api/v2")


def _credentials(key_id: str | None, private_key: Path | None) -> kalshi.KalshiCredentials | None:
    if key_id and private_key:
        return kalshi.KalshiCredentials.from_file(key_id, private_key)
    try:
        return kalshi.KalshiCredentials.from_env()
    except kalshi.KalshiAuthError:
        if key_id or private_key:
            raise
        return None


class _Recorder:
    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.frames = 0

    def __call__(self, data: bytes, ts_ms: int) -> None:
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
        self.out.write(orjson.dumps({"ts_ms": ts_ms, "frame": text}))
        self.out.write(b"\n")
        self.frames += 1


async def _discover(ws_url: str, creds: kalshi.KalshiCredentials | None, limit: int) -> list[str]:
    async with kalshi.KalshiRestClient(_rest_url_for(ws_url), creds, max_retries=2) as rest:
        page = await rest.list_markets(limit=limit, status="open")
        return [m.ticker for m in page.markets]


async def _record(
    ws_url: str,
    creds: kalshi.KalshiCredentials | None,
    markets: list[str],
    channels: list[str],
    out_path: Path,
    duration: float | None,
) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    with out_path.open("wb") as fh:
        rec = _Recorder(fh)
        feed = kalshi.KalshiFeed(ws_url, creds, markets, channels, on_frame=rec)
        started = time.monotonic()
        async with feed:

            async def consume() -> None:
                async for _ in feed:  # events are not needed: the raw frames are the record
                    pass

            consumer = asyncio.create_task(consume())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(duration):
                    await stop.wait()
            await cancel_and_wait(consumer)
        s = feed.stats
    elapsed = time.monotonic() - started
    typer.echo(
        f"recorded {rec.frames} frames in {elapsed:.1f}s to {out_path} "
        f"(gaps {s.gaps}, reconnects {s.reconnects}, malformed {s.malformed})",
        err=True,
    )
    return rec.frames


def register(app: typer.Typer) -> None:
    """Add ``record`` to the ``marketpulse`` command."""

    @app.command()
    def record(
        url: Annotated[
            str, typer.Option(help="WebSocket URL, or sim (127.0.0.1:8765), demo or prod.")
        ] = "sim",
        markets: Annotated[
            list[str] | None,
            typer.Option(help="Market tickers (repeat or comma-separate); default: open markets."),
        ] = None,
        out: Annotated[Path, typer.Option(help="JSONL file to write.")] = Path("recording.jsonl"),
        duration: Annotated[
            float | None, typer.Option(help="Seconds to record; default until Ctrl-C.")
        ] = None,
        channels: Annotated[
            str, typer.Option(help="Comma-separated channels.")
        ] = "orderbook_delta,ticker,trade",
        max_markets: Annotated[
            int, typer.Option(help="How many open markets to discover when none are given.")
        ] = 20,
        key_id: Annotated[
            str | None, typer.Option(help="API key id (default: KALSHI_API_KEY_ID).")
        ] = None,
        private_key: Annotated[
            Path | None,
            typer.Option(help="PEM private key file (default: KALSHI_PRIVATE_KEY_PATH)."),
        ] = None,
    ) -> None:
        """Record a Kalshi WS v2 feed (simulator or real) to JSONL with receive timestamps."""
        ws_url = _ws_url(url)
        try:
            creds = _credentials(key_id, private_key)
        except kalshi.KalshiAuthError as exc:
            typer.echo(f"record: {exc}", err=True)
            raise typer.Exit(2) from None
        tickers = [t.strip() for m in (markets or []) for t in m.split(",") if t.strip()]
        if not tickers:
            try:
                tickers = asyncio.run(_discover(ws_url, creds, max_markets))
            except (kalshi.KalshiRestError, OSError) as exc:
                typer.echo(f"record: cannot list markets: {exc}", err=True)
                raise typer.Exit(1) from None
            if not tickers:
                typer.echo("record: no open markets found; pass --markets", err=True)
                raise typer.Exit(1)
        chans = [c.strip() for c in channels.split(",") if c.strip()]
        if creds is None:
            typer.echo(
                "record: no credentials (KALSHI_API_KEY_ID...): connecting unsigned", err=True
            )
        asyncio.run(_record(ws_url, creds, tickers, chans, out, duration))
        sys.stdout.flush()
