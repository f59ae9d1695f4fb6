"""A well-behaved official client: ``python -m marketpulse.testing._bystander URL NAME``.

Subscribes to ``hostile:latest {name}`` with the PyPI ``convex`` client and prints one JSON line
per pushed stamp, ``{"at": <receipt epoch ms>, "v": <stamp>}`` (``{"error": ...}`` if the
subscription fails). A separate process: the client's blocking iterator holds the GIL.
"""

from __future__ import annotations

import json
import sys
import time

from convex import ConvexClient


def main(url: str, name: str) -> None:
    client = ConvexClient(url)
    sub = client.subscribe("hostile:latest", {"name": name})
    print(json.dumps({"ready": True}), flush=True)
    last = None
    for snapshot in client.watch_all():
        at = time.time() * 1000.0
        result = (snapshot or {}).get(sub.id)
        if result is None or result == last:
            continue
        last = result
        if isinstance(result, dict) and result.get("type") == "value":
            print(json.dumps({"at": at, "v": result.get("value")}), flush=True)
        else:
            print(json.dumps({"at": at, "error": str(result)}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
