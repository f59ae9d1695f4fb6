"""``marketpulse simulate``: run the exchange simulator in the foreground."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

# The package's names load on first use: every ``marketpulse`` command imports this module (to
# register ``simulate``) and need not load the simulator and the Kalshi client it brings.
from marketpulse import simulator


def register(app: typer.Typer) -> None:
    """Add ``simulate`` to the ``marketpulse`` command."""
    app.command("simulate")(simulate)


def simulate(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port for REST and WS (0 = any free port).")] = 8765,
    markets: Annotated[int, typer.Option(min=1, help="Number of tradable markets.")] = 50,
    rate: Annotated[float, typer.Option(min=0, help="Model messages per second.")] = 1000.0,
    seed: Annotated[int, typer.Option(help="Seed of the order-flow model.")] = 1,
    epoch_ms: Annotated[
        int | None,
        typer.Option(help="Base time of the catalog (epoch ms); fixes tickers across days."),
    ] = None,
    public_key: Annotated[
        Path | None, typer.Option(help="Verify handshakes against this PEM public key.")
    ] = None,
    key_id: Annotated[str | None, typer.Option(help="Required KALSHI-ACCESS-KEY.")] = None,
    key_dir: Annotated[
        Path | None, typer.Option(help="Where the generated private key is written (or reused).")
    ] = None,
    allow_anonymous: Annotated[bool, typer.Option(help="Accept unsigned handshakes.")] = False,
    max_skew_ms: Annotated[
        int | None, typer.Option(min=0, help="Refuse signatures older/newer than this (ms).")
    ] = None,
    ping_interval: Annotated[float, typer.Option(min=0.05, help="Seconds between pings.")] = 10.0,
    legacy: Annotated[bool, typer.Option(help="Also emit pre-2026-03 integer fields.")] = False,
    closed_markets: Annotated[int, typer.Option(min=0, help="Extra finalized markets.")] = 0,
    max_buffer: Annotated[
        int, typer.Option(min=1024, help="Per-connection send buffer (bytes) before error 25.")
    ] = 8 * 1024 * 1024,
    replay: Annotated[Path | None, typer.Option(help="Replay a JSONL recording.")] = None,
    speed: Annotated[float, typer.Option(min=0.001, help="Replay speed factor.")] = 1.0,
    loop: Annotated[bool, typer.Option(help="Replay: start over at the end.")] = False,
    fault_rate: Annotated[
        float,
        typer.Option(min=0, max=1, help="Per sequenced frame: chance of a skip or duplicate."),
    ] = 0.0,
    drop_every: Annotated[int, typer.Option(min=0, help="Drop a connection every N frames.")] = 0,
    malformed_every: Annotated[
        int, typer.Option(min=0, help="Send a malformed frame every N frames.")
    ] = 0,
    stall_every: Annotated[float, typer.Option(min=0, help="Stall connections every N s.")] = 0.0,
    stall_seconds: Annotated[float, typer.Option(min=0, help="Length of each stall.")] = 1.0,
) -> None:
    """Run a Kalshi-compatible exchange (WS v2 + REST v2) on one port."""
    if replay is not None and not replay.is_file():
        raise typer.BadParameter(f"no such recording: {replay}", param_hint="--replay")
    if public_key is not None and not public_key.is_file():
        raise typer.BadParameter(f"no such key file: {public_key}", param_hint="--public-key")
    config = simulator.SimulatorConfig(
        host=host,
        port=port,
        markets=markets,
        rate=rate,
        seed=seed,
        epoch_ms=epoch_ms,
        public_key_path=str(public_key) if public_key else None,
        key_id=key_id,
        key_dir=str(key_dir) if key_dir else None,
        allow_anonymous=allow_anonymous,
        max_skew_ms=max_skew_ms,
        ping_interval=ping_interval,
        legacy=legacy,
        closed_markets=closed_markets,
        max_buffer_bytes=max_buffer,
        replay=str(replay) if replay else None,
        speed=speed,
        replay_loop=loop,
        faults=simulator.FaultSettings(
            fault_rate=fault_rate,
            drop_every=drop_every,
            malformed_every=malformed_every,
            stall_every=stall_every,
            stall_seconds=stall_seconds,
        ),
    )
    try:
        asyncio.run(_serve(config))
    except OSError as exc:
        typer.echo(f"simulate: cannot start: {exc}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        pass


async def _serve(config: simulator.SimulatorConfig) -> None:
    sim = simulator.Simulator(config)
    await sim.start()
    print(
        f"marketpulse simulator: {len(sim.markets)} markets, rate {config.rate:g} msg/s, "
        f"seed {config.seed}"
    )
    print(f"  REST  {sim.rest_url}")
    print(f"  WS    {sim.ws_url}")
    print(f"  KALSHI_API_KEY_ID={sim.key_id or '(any)'}")
    print(f"  KALSHI_PRIVATE_KEY_PATH={sim.private_key_path or '(external key)'}")
    # One machine-readable line for scripts and tests that start the simulator as a subprocess.
    print(
        json.dumps(
            {
                "event": "simulator_ready",
                "port": sim.port,
                "rest_url": sim.rest_url,
                "ws_url": sim.ws_url,
                "key_id": sim.key_id,
                "private_key_path": sim.private_key_path,
            }
        )
    )
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await sim.stop()
