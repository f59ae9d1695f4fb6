"""Subscribe with the official ``convex`` Python client and print every value received.

Usage: ``python convex_watch.py URL FUNCTION ARGS_JSON [ARGS_JSON ...]``. One JSON line per
received value: ``{"i": <subscription index>, "at": <epoch ms at receipt>, "v": <value>}``.
Runs in its own process because the client's blocking iterator holds the GIL; the async
iterator is used here, one task per subscription. Prints ``{"ready": true}`` once subscribed.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from convex import ConvexClient


async def watch(i: int, sub: Any) -> None:
    async for value in sub:
        line = json.dumps({"i": i, "at": time.time() * 1000.0, "v": value})
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


async def main(url: str, function: str, args_list: list[dict[str, Any]]) -> None:
    client = ConvexClient(url)
    subs = [client.subscribe(function, args) for args in args_list]
    sys.stdout.write(json.dumps({"ready": True}) + "\n")
    sys.stdout.flush()
    await asyncio.gather(*(watch(i, s) for i, s in enumerate(subs)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], [json.loads(a) for a in sys.argv[3:]]))
