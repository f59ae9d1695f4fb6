"""Benchmark: per-message work on a 200-market applyUpdates before it runs: depth walk, replay key.

``check_json_depth`` walks a parsed message before any recursive decoder sees it (the sync
protocol and HTTP both run it). The message is the worker's batch as the sync client sends it
(``Mutation`` with convex_encoded_json args; 200 books of 10+10 levels, 100 prices, 40 trades).

Figures per message (µs, p50/p99/p999/max of ``--n`` timed calls): the depth walk; baselines from
the same run: ``orjson.loads`` of the same text (the parse it follows) and ``json_to_value`` of
the arguments (the decode it guards), and the walk's cost as a ratio of each. Goal: the walk
costs less than the parse.

The replay key (the bytes a re-sent mutation must repeat, ``MutationRequested.args_json``): the
received arguments dumped with sorted keys, against the same bytes made the way they were
before, by encoding the decoded arguments again (``value_to_json``), in the same run.

    python bench/json_depth.py [--n 400]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import orjson

from _common import emit, print_table
from marketdata_apply import batch
from marketpulse.reactive.limits import check_json_depth
from marketpulse.reactive.values import json_to_value, value_to_json
from marketpulse.testing import summarize_ms


def timed(call: Callable[[], Any], n: int) -> list[float]:
    """Milliseconds of each of ``n`` calls (after 10 untimed)."""
    for _ in range(10):
        call()
    out = []
    for _ in range(n):
        started = time.perf_counter()
        call()
        out.append((time.perf_counter() - started) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=400)
    n = parser.parse_args().n
    args = value_to_json({"batch": batch(1, list(range(200)))})
    text = orjson.dumps(
        {"type": "Mutation", "requestId": 1, "udfPath": "marketData:applyUpdates", "args": [args]}
    )
    message = orjson.loads(text)
    walk = summarize_ms(timed(lambda: check_json_depth(message, 64 + 2), n))
    parse = summarize_ms(timed(lambda: orjson.loads(text), n))
    decode = summarize_ms(timed(lambda: json_to_value(message["args"][0]), n))
    decoded = json_to_value(message["args"][0])
    sort = orjson.OPT_SORT_KEYS
    key_now = summarize_ms(timed(lambda: orjson.dumps(message["args"][0], option=sort), n))
    key_before = summarize_ms(timed(lambda: orjson.dumps(value_to_json(decoded), option=sort), n))
    keys = ("p50_ms", "p99_ms", "p999_ms", "max_ms")
    print_table(
        f"per message of {len(text):,} bytes (µs), {n} calls each",
        ("", "p50", "p99", "p999", "max"),
        [
            (name, *(fig[k] * 1000 for k in keys))
            for name, fig in (
                ("depth walk", walk),
                ("orjson.loads", parse),
                ("json_to_value", decode),
                ("replay key: dump received args", key_now),
                ("replay key: encode decoded args (before)", key_before),
            )
        ],
    )
    key_ratio = key_before["p50_ms"] / key_now["p50_ms"]
    print(f"replay key at p50: {key_ratio:.1f}x faster than encoding the decoded args again")
    vs_parse = walk["p50_ms"] / parse["p50_ms"]
    vs_decode = walk["p50_ms"] / decode["p50_ms"]
    print(f"walk / parse at p50: {vs_parse:.2f}x (goal < 1); walk / decode: {vs_decode:.2f}x")
    emit(
        {
            "bench": "json_depth",
            "bytes": len(text),
            "walk": walk,
            "parse": parse,
            "decode": decode,
            "walk_vs_parse_p50": round(vs_parse, 3),
            "walk_vs_decode_p50": round(vs_decode, 3),
            "replay_key": key_now,
            "replay_key_before": key_before,
            "replay_key_speedup_p50": round(key_ratio, 2),
            "goal": "walk_vs_parse_p50 < 1",
        }
    )


if __name__ == "__main__":
    main()
